//! `bpfnet-cni`: the CNI plugin. Container runtimes (podman, containerd,
//! Kubernetes' kubelet through CRI) run it with the CNI environment and the
//! plugin configuration on stdin; everything it does is in the library
//! (`bpfnet::cni`, on the same operations as the `bpfnet` CLI).
use std::{io::Read as _, process::ExitCode};

use bpfnet::paths::Paths;

const HELP: &str = "\
bpfnet-cni: CNI plugin (spec 1.1.0; also 1.0.0, 0.4.0, 0.3.x) putting containers on bpfnet networks

A container runtime runs it, not you: CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC, VERSION),
CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_ARGS (K8S_POD_NAME names the sandbox) in the
environment, the plugin configuration on stdin, the result or error (JSON) on stdout.

Configuration (a conflist in the runtime's CNI config directory):
  {\"cniVersion\": \"1.0.0\", \"name\": \"web\",
   \"plugins\": [{\"type\": \"bpfnet-cni\", \"network\": \"web\"},
               {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}
\"network\" names a network made beforehand with `bpfnet network create NAME`; addresses come
from its IPAM (an \"ipam\" section naming a plugin is refused). Install this binary where the
runtime looks for plugins (e.g. /usr/lib/cni or /opt/cni/bin, or add /usr/local/bin to its
plugin dirs). Attached containers are bpfnet sandboxes: `bpfnet ps`, policy, stats, gc.

Options: -h, --help   this text;  -V, --version   the version.";

fn main() -> ExitCode {
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("bpfnet-cni {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        // The DNS responder the operations start runs from the binary that
        // started it (see `dns::ensure_running`): this one too.
        Some("dns-server") => return dns_server(args.get(1).map(String::as_str)),
        _ => {}
    }
    let env = bpfnet::cni::Env::from_env();
    let mut stdin = vec![];
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        println!(
            "{}",
            serde_json::json!({"cniVersion": bpfnet::cni::LATEST, "code": 5,
                "msg": "I/O failure", "details": format!("reading the configuration from stdin: {e}")})
        );
        return ExitCode::FAILURE;
    }
    let out = bpfnet::cni::run(&env, &stdin);
    print!("{}", out.stdout);
    ExitCode::from(out.status)
}

fn dns_server(flag: Option<&str>) -> ExitCode {
    let paths = Paths::from_env();
    let r = match flag {
        Some("--worker") => bpfnet::dns::run_worker(&paths),
        _ => bpfnet::dns::run_supervisor(&paths),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
