//! `bpfnet network create|ls|inspect|rm|connect|disconnect`.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::ExitCode,
};

use anyhow::{bail, Result};
use bpfnet::{
    inspect,
    ops::{Controller, NetworkCreate},
};
use clap::Subcommand;

use super::{each, print_json, Format};

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// bridge (the eBPF datapath) or linux-bridge (a kernel bridge, for
        /// comparisons: no --internal, icc=false or policy).
        #[arg(short = 'd', long = "driver")]
        driver: Option<String>,
        /// Subnet in CIDR form (repeatable: one IPv4 and, with --ipv6, one
        /// IPv6). IPv4 must not overlap another network, an address or route
        /// of the host, or 0/8, 127/8, 169.254/16, 224/4, 240/4; IPv6 must
        /// not overlap another network or a route of the host, be at most a
        /// /126 and be unicast
        /// (not ::/8, fe80::/10, fec0::/10, ff00::/8, 2001:db8::/32).
        #[arg(long = "subnet")]
        subnets: Vec<String>,
        /// Gateway address (repeatable: one per family); default: the
        /// subnet's first address.
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// Dual stack: IPv6 too, on the --subnet given or on the next free
        /// /64 of bpfnet's ULA pool fd62:706e:6574::/48. Masqueraded
        /// (NAT66) and published over IPv6 unless --internal; turns
        /// net.ipv6.conf.all.forwarding on.
        #[arg(long)]
        ipv6: bool,
        /// No traffic leaves the network through the gateway; DNS answers
        /// only the names of the sandboxes' networks, nothing is forwarded.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=true|false (repeatable): icc,
        /// com.docker.network.bridge.enable_icc, bpfnet.flood,
        /// com.docker.network.bridge.enable_ip_masquerade (false: what
        /// leaves the host keeps the sandbox's own address).
        #[arg(short = 'o', long = "opt")]
        options: Vec<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show networks as JSON (Docker's fields; `DNS`: where members ask,
    /// where unknown names go, the per-sandbox limits).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a sandbox to a network.
    Connect {
        /// Extra name on this network (repeatable; the rules of names).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// IPv6 address (a network with --ipv6).
        #[arg(long)]
        ip6: Option<Ipv6Addr>,
        network: String,
        sandbox: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect { network: String, sandbox: String },
}

/// The network table of `network ls` (and of `datapath load`).
pub fn table(c: &Controller) -> String {
    inspect::table(
        &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
        &inspect::network_rows(c.state()),
    )
}

pub async fn run(c: &mut Controller, cmd: NetworkCmd) -> Result<ExitCode> {
    match cmd {
        NetworkCmd::Create {
            driver,
            subnets,
            gateways,
            ipv6,
            internal,
            options,
            name,
        } => {
            let net = c
                .network_create(NetworkCreate {
                    name,
                    driver,
                    subnets,
                    gateways,
                    ipv6,
                    internal,
                    options,
                })
                .await?;
            println!("{}", net.id);
        }
        NetworkCmd::Ls { format } => match format {
            Format::Json => print_json(&inspect::network_ls_json(c.state())),
            Format::Table => print!("{}", table(c)),
        },
        NetworkCmd::Inspect { names } => {
            let state = c.state();
            if let Some(missing) = names.iter().find(|n| !state.networks.contains_key(*n)) {
                bail!("network {missing:?} not found; list networks with `bpfnet network ls`");
            }
            let dns = bpfnet::dns::Files::new(&c.paths);
            print_json(&serde_json::Value::Array(
                names
                    .iter()
                    .map(|n| {
                        let mut v = inspect::network_json(state, n);
                        if let Some(d) = bpfnet::dns::network_status(&dns, state, n) {
                            v["DNS"] = d;
                        }
                        v
                    })
                    .collect(),
            ));
        }
        NetworkCmd::Rm { names } => {
            return each(c, &names, async |c, n| {
                c.refuse_docker_network(n)?;
                c.network_rm(n).await
            })
            .await;
        }
        NetworkCmd::Connect {
            aliases,
            ip,
            ip6,
            network,
            sandbox,
        } => c.connect(&network, &sandbox, aliases, ip, ip6).await?,
        NetworkCmd::Disconnect { network, sandbox } => {
            c.refuse_docker_sandbox(
                &sandbox,
                &format!("disconnect it with `docker network disconnect {network} {sandbox}`"),
            )?;
            c.disconnect(&network, &sandbox).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}
