//! `bpfnet`: Docker-shaped networking for network namespaces on an eBPF
//! datapath. This file only parses the command line and dispatches; each
//! command lives in `commands/`.
mod commands;

use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use bpfnet::{exec, ops::Controller, paths::Paths};
use clap::{error::ErrorKind, Parser, Subcommand};

use commands::{
    datapath::DatapathCmd, network::NetworkCmd, policy::PolicyCmd, sandbox::CreateOpts, Format,
};

#[derive(Parser)]
#[command(
    name = "bpfnet",
    version,
    about = "Container networking for network namespaces, on an eBPF datapath instead of a kernel bridge",
    after_help = "DNS of the user networks: BPFNET_DNS_UPSTREAM=IP[:PORT][,IP[:PORT]...] sets where names \
the asking sandbox cannot see are forwarded (empty: the host's /etc/resolv.conf), BPFNET_DNS_PORT the port served; \
a command that has them saves them in BPFNET_ROOT/dns/config.json, where they stay until set again. \
`bpfnet network inspect NET` shows them.\n\n\
Commands that change something give up when one process holds the bpfnet lock for \
BPFNET_LOCK_TIMEOUT seconds (default 60) while they wait; ps, inspect, network ls/inspect, stats, policy ls \
and exec never wait."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
    /// List a sandbox's published ports (`80/tcp -> 0.0.0.0:8080`, and
    /// `80/tcp -> [::]:8080` when published over IPv6 too), or
    /// where one port is published.
    Port {
        name: String,
        /// PORT[/tcp|/udp]
        port: Option<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Also when other sandboxes share its namespace.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Finish or roll back an operation a crash interrupted, reconcile the
    /// kernel with bpfnet's state and remove leftovers.
    Gc,
    /// Packet and drop counters of the datapath, and each endpoint's open
    /// conntrack entries against its quota.
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
    /// Serve Docker as its network driver (libnetwork's remote NetworkDriver
    /// API): `docker network create -d bpfnet`, `docker run --network NET`.
    /// Runs in the foreground until SIGTERM or SIGINT.
    DockerPlugin {
        /// The plugin socket; its name is the driver's name (`-d bpfnet`).
        /// Docker finds plugins in /run/docker/plugins.
        #[arg(long, value_name = "PATH", default_value = bpfnet::docker::plugin::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
        /// dockerd's API socket, where container and network names are read
        /// (unix:///PATH; default: DOCKER_HOST, else /var/run/docker.sock).
        #[arg(long, value_name = "URL")]
        docker_host: Option<String>,
    },
    /// The DNS responder of the user networks (started by bpfnet itself).
    #[command(hide = true)]
    DnsServer {
        /// Serve (the supervisor runs this and restarts it when it exits).
        #[arg(long)]
        worker: bool,
    },
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
        let sb = bpfnet::store::snapshot(&paths)?
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
    if let Cmd::DockerPlugin {
        socket,
        docker_host,
    } = cli.cmd
    {
        let opts = bpfnet::docker::plugin::Opts {
            socket,
            docker_host,
        };
        bpfnet::docker::plugin::run(paths, opts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(dispatch(cli.cmd, paths))
}

/// Commands that change nothing run without the lock.
fn read_only(cmd: &Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Ps { .. }
            | Cmd::Inspect { .. }
            | Cmd::Port { .. }
            | Cmd::Stats { .. }
            | Cmd::Network(NetworkCmd::Ls { .. } | NetworkCmd::Inspect { .. })
            | Cmd::Policy(PolicyCmd::Ls { .. })
    )
}

async fn dispatch(cmd: Cmd, paths: Paths) -> Result<ExitCode> {
    match cmd {
        Cmd::Datapath(cmd) => return commands::datapath::run(&paths, cmd).await,
        Cmd::Demo => bpfnet::demo::run(&paths).await?,
        Cmd::Monitor => bpfnet::stats::monitor(&paths).await?,
        Cmd::Exec { .. } | Cmd::DnsServer { .. } | Cmd::DockerPlugin { .. } => {
            unreachable!("handled before")
        }
        cmd => {
            let mut c = if read_only(&cmd) {
                Controller::open_read_only(&paths).await?
            } else {
                Controller::open(&paths).await?
            };
            let result = match cmd {
                Cmd::Network(cmd) => commands::network::run(&mut c, cmd).await,
                Cmd::Create(opts) => commands::sandbox::create(&mut c, opts).await,
                Cmd::Run { opts, rm, cmd } => commands::sandbox::run(&mut c, opts, rm, cmd).await,
                Cmd::Ps { format } => commands::sandbox::ps(&c, format),
                Cmd::Inspect { names } => commands::sandbox::inspect(&c, &names),
                Cmd::Port { name, port } => commands::sandbox::port(&c, &name, port.as_deref()),
                Cmd::Rm { force, names } => commands::sandbox::rm(&mut c, &names, force).await,
                Cmd::Gc => commands::gc::run(&mut c).await,
                Cmd::Stats { sandbox, format } => {
                    commands::stats::run(&c, sandbox.as_deref(), format).await
                }
                Cmd::Policy(cmd) => commands::policy::run(&mut c, cmd).await,
                Cmd::Datapath(_)
                | Cmd::Demo
                | Cmd::Monitor
                | Cmd::Exec { .. }
                | Cmd::DnsServer { .. }
                | Cmd::DockerPlugin { .. } => unreachable!("handled before"),
            };
            // The process exits next: freeing the state (thousands of
            // sandboxes) piece by piece would only cost time. The lock goes
            // with the process's files.
            std::mem::forget(c);
            return result;
        }
    }
    Ok(ExitCode::SUCCESS)
}
