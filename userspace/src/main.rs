//! `bpfnet`: Docker-shaped networking for network namespaces on an eBPF datapath.
use std::{net::Ipv4Addr, process::ExitCode};

use anyhow::{anyhow, bail, Result};
use bpfnet::{
    controller::{Controller, NetworkCreate, SandboxCreate},
    exec, inspect,
    paths::Paths,
    policy::{Action, Traffic},
    state::Locked,
    stats,
};
use clap::{error::ErrorKind, Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bpfnet",
    version,
    about = "Container networking for network namespaces, on an eBPF datapath instead of a kernel bridge"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

#[derive(Args, Clone)]
struct CreateOpts {
    /// Sandbox name (a network namespace at /run/netns/NAME): 1-63 of
    /// letters, digits, '_', '.', '-', starting with a letter or digit.
    #[arg(long)]
    name: String,
    /// Network to join: a network name, none, host or container:OTHER (repeatable).
    #[arg(long = "network", alias = "net")]
    networks: Vec<String>,
    /// Extra name on user networks (repeatable).
    #[arg(long = "network-alias")]
    aliases: Vec<String>,
    /// Address on the first network (user networks only).
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// Link to another sandbox: OTHER[:ALIAS] (repeatable).
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

#[derive(Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create a sandbox.
    Create(CreateOpts),
    /// Create a sandbox and run a command in it.
    Run {
        #[command(flatten)]
        opts: CreateOpts,
        /// Remove the sandbox when the command exits.
        #[arg(long)]
        rm: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run a command in a sandbox.
    Exec {
        name: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// List sandboxes.
    Ps {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show sandboxes as JSON (Docker's fields).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Also when other sandboxes share its namespace.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Reconcile the kernel with bpfnet's state and remove leftovers.
    Gc,
    /// Packet and drop counters of the datapath.
    Stats {
        sandbox: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Stream packets dropped from now on: time, reason, who, what.
    Monitor,
    /// Policy between networks, written with sandbox and network names.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The datapath itself.
    #[command(subcommand)]
    Datapath(DatapathCmd),
    /// Play the seed tutorial's walkthrough (busybox1..3 on bridge and bridge2).
    Demo,
    /// The DNS responder of the user networks (started by bpfnet itself).
    #[command(hide = true)]
    DnsServer {
        /// Serve (the supervisor runs this and restarts it when it exits).
        #[arg(long)]
        worker: bool,
    },
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        /// bridge (the eBPF datapath) or linux-bridge (a kernel bridge).
        #[arg(short = 'd', long = "driver")]
        driver: Option<String>,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        /// No traffic leaves the network through the gateway.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=true|false (repeatable): icc,
        /// com.docker.network.bridge.enable_icc, bpfnet.flood.
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
    /// Show networks as JSON (Docker's fields).
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
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        network: String,
        sandbox: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect { network: String, sandbox: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyAction {
    Allow,
    Deny,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Add a rule; prints its ID.
    Add {
        /// Who opens connections: a sandbox name, net:NETWORK or *.
        #[arg(long)]
        from: String,
        /// To whom: a sandbox name, net:NETWORK or *.
        #[arg(long)]
        to: String,
        /// N, N-M, optionally /tcp or /udp (both if omitted).
        #[arg(long, conflicts_with = "icmp")]
        port: Option<String>,
        /// ICMP echo (ping).
        #[arg(long)]
        icmp: bool,
        #[arg(long, value_enum, default_value = "allow")]
        action: PolicyAction,
    },
    /// Add many rules in one step from a JSON file: an array of
    /// {"from", "to", "port"?, "icmp"?, "action"?} objects.
    Import { file: std::path::PathBuf },
    /// List rules with their hit counters.
    #[command(alias = "list")]
    Ls {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove rules.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DatapathCmd {
    /// Load (or atomically replace) the programs, pin them and their maps,
    /// and bring the kernel in line with the state.
    Load {
        /// Inter-sandbox communication on the default bridge (Docker's --icc).
        #[arg(long)]
        icc: Option<bool>,
    },
    /// Remove everything bpfnet made: sandboxes, links, pins, state.
    Unload,
}

fn main() -> ExitCode {
    // Die quietly when the reader of our output goes away (`| head`).
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if e.use_stderr()
                && e.kind() != ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            let line = bpfnet::util::one_line_usage_error(&e.render().to_string());
            eprintln!("Error: {line}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "bpfnet needs root (it manages namespaces, links and eBPF programs); run it with sudo"
        );
    }
    let paths = Paths::from_env();
    if let Cmd::Exec { name, cmd } = &cli.cmd {
        // Exec replaces this process: no runtime, no lock held.
        let sb = Locked::acquire(&paths)?
            .state
            .sandboxes
            .get(name)
            .cloned()
            .ok_or_else(|| {
                anyhow!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`")
            })?;
        return Err(exec::exec(&sb, cmd));
    }
    if let Cmd::DnsServer { worker } = cli.cmd {
        if worker {
            bpfnet::dns::run_worker(&paths)?;
        } else {
            bpfnet::dns::run_supervisor(&paths)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cli, paths))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

/// Runs `f` for each name; reports each failure, fails if any did.
async fn each<'a>(
    c: &mut Controller,
    names: &'a [String],
    mut f: impl AsyncFnMut(&mut Controller, &'a str) -> Result<()>,
) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for name in names {
        match f(c, name).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

async fn run_async(cli: Cli, paths: Paths) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Datapath(DatapathCmd::Load { icc }) => {
            let (report, c) = Controller::load(&paths, icc).await?;
            println!("programs (pinned under {}):", paths.progs_dir().display());
            for (name, id) in &report.programs {
                println!("  {name:<12} id {id}");
            }
            println!("attachments replaced in place: {}", report.replaced);
            println!("maps (pinned under {}):", paths.maps_dir().display());
            for m in &report.maps {
                println!("  {}", m.file_name().unwrap_or_default().to_string_lossy());
            }
            println!("networks:");
            print!(
                "{}",
                indent(&inspect::table(
                    &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                    &inspect::network_rows(c.snapshot())
                ))
            );
        }
        Cmd::Datapath(DatapathCmd::Unload) => {
            let removed = Controller::unload(&paths).await?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for r in removed {
                println!("removed {r}");
            }
        }
        Cmd::Demo => bpfnet::demo::run(&paths).await?,
        Cmd::Monitor => stats::monitor(&paths).await?,
        cmd => {
            let mut c = Controller::open(&paths).await?;
            return command(&mut c, cmd).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

async fn command(c: &mut Controller, cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Network(NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            internal,
            options,
            name,
        }) => {
            let net = c
                .network_create(NetworkCreate {
                    name,
                    driver,
                    subnet,
                    gateway,
                    internal,
                    options,
                })
                .await?;
            println!("{}", net.id);
        }
        Cmd::Network(NetworkCmd::Ls { format }) => match format {
            Format::Json => print_json(&inspect::network_ls_json(c.snapshot())),
            Format::Table => print!(
                "{}",
                inspect::table(
                    &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                    &inspect::network_rows(c.snapshot())
                )
            ),
        },
        Cmd::Network(NetworkCmd::Inspect { names }) => {
            let state = c.snapshot();
            if let Some(missing) = names.iter().find(|n| !state.networks.contains_key(*n)) {
                bail!("network {missing:?} not found; list networks with `bpfnet network ls`");
            }
            print_json(&serde_json::Value::Array(
                names
                    .iter()
                    .map(|n| inspect::network_json(state, n))
                    .collect(),
            ));
        }
        Cmd::Network(NetworkCmd::Rm { names }) => {
            return each(c, &names, async |c, n| c.network_rm(n).await).await;
        }
        Cmd::Network(NetworkCmd::Connect {
            aliases,
            ip,
            network,
            sandbox,
        }) => {
            c.connect(&network, &sandbox, aliases, ip).await?;
        }
        Cmd::Network(NetworkCmd::Disconnect { network, sandbox }) => {
            c.disconnect(&network, &sandbox).await?;
        }
        Cmd::Create(opts) => {
            let sb = c.sandbox_create(opts.into()).await?;
            println!("{}", sb.id);
        }
        Cmd::Run { opts, rm, cmd } => {
            let name = opts.name.clone();
            let sb = c.sandbox_create(opts.into()).await?;
            let status = exec::command(&sb, &cmd)?.status();
            if rm {
                c.sandbox_rm(&name, true).await?;
            }
            let status =
                status.map_err(|e| anyhow!("cannot run {:?} in sandbox {name:?}: {e}", cmd[0]))?;
            return Ok(ExitCode::from(status.code().unwrap_or(128) as u8));
        }
        Cmd::Ps { format } => match format {
            Format::Json => print_json(&inspect::ps_json(c.snapshot())),
            Format::Table => print!(
                "{}",
                inspect::table(
                    &["SANDBOX ID", "NAME", "NETWORK MODE", "ADDRESSES", "CREATED"],
                    &inspect::sandbox_rows(c.snapshot())
                )
            ),
        },
        Cmd::Inspect { names } => {
            let state = c.snapshot();
            let mut out = vec![];
            for n in &names {
                let sb = state.sandboxes.get(n).ok_or_else(|| {
                    anyhow!("sandbox {n:?} not found; list sandboxes with `bpfnet ps`")
                })?;
                out.push(inspect::sandbox_json(state, sb));
            }
            print_json(&serde_json::Value::Array(out));
        }
        Cmd::Rm { force, names } => {
            return each(c, &names, async |c, n| c.sandbox_rm(n, force).await).await;
        }
        Cmd::Policy(PolicyCmd::Add {
            from,
            to,
            port,
            icmp,
            action,
        }) => {
            let traffic = match (port, icmp) {
                (Some(p), _) => Traffic::parse_port(&p)?,
                (None, true) => Traffic::Icmp,
                (None, false) => Traffic::Any,
            };
            let action = match action {
                PolicyAction::Allow => Action::Allow,
                PolicyAction::Deny => Action::Deny,
            };
            let ids = c.policy_add(vec![(from, to, traffic, action)])?;
            println!("{}", ids[0]);
        }
        Cmd::Policy(PolicyCmd::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow!("reading {}: {e}", file.display()))?;
            let rules = bpfnet::policy::parse_import(&text)
                .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
            let n = rules.len();
            let ids = c
                .policy_add(rules)
                .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
            println!(
                "added {n} rules (IDs {}..={})",
                ids.first().unwrap_or(&0),
                ids.last().unwrap_or(&0)
            );
        }
        Cmd::Policy(PolicyCmd::Ls { format }) => {
            let mut rows = vec![];
            for r in c.snapshot().policies.values() {
                let hits = c.datapath().rule_hits(r.id)?;
                rows.push((r.clone(), hits));
            }
            let action = |a: Action| if a == Action::Allow { "allow" } else { "deny" };
            match format {
                Format::Json => print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(r, hits)| {
                            serde_json::json!({
                                "ID": r.id, "From": r.from, "To": r.to,
                                "Port": r.traffic.display(), "Action": action(r.action), "Hits": hits,
                            })
                        })
                        .collect(),
                )),
                Format::Table => {
                    let rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|(r, hits)| {
                            vec![
                                r.id.to_string(),
                                r.from.clone(),
                                r.to.clone(),
                                r.traffic.display(),
                                action(r.action).to_string(),
                                hits.to_string(),
                            ]
                        })
                        .collect();
                    print!("{}", inspect::table(&["ID", "FROM", "TO", "PORT", "ACTION", "HITS"], &rows));
                }
            }
        }
        Cmd::Policy(PolicyCmd::Rm { ids }) => {
            c.policy_rm(&ids)?;
            for id in ids {
                println!("{id}");
            }
        }
        Cmd::Gc => {
            let removed = c.gc().await?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for r in removed {
                println!("removed {r}");
            }
        }
        Cmd::Stats { sandbox, format } => {
            let report = stats::collect(c, sandbox.as_deref()).await?;
            match format {
                Format::Json => print_json(&report.json()),
                Format::Table => print!("{}", report.table()),
            }
        }
        Cmd::Exec { .. } | Cmd::Datapath(_) | Cmd::Demo | Cmd::Monitor | Cmd::DnsServer { .. } => {
            unreachable!("handled before")
        }
    }
    Ok(ExitCode::SUCCESS)
}
