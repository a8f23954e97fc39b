//! A sandbox's `/etc/netns/NAME/{hosts,resolv.conf}`, which `ip netns exec`
//! and `bpfnet exec` bind over `/etc`. hosts: the sandbox's own name and its
//! links (one direction: only the linking sandbox resolves the linked one).
//! resolv.conf: on a user network, the responder on the gateway of the first
//! one; otherwise (the default bridge resolves no names) the host's resolvers.
use anyhow::{anyhow, Result};

use crate::{
    dns,
    state::{NetworkMode, Sandbox, State},
    util,
};

/// Writes the files of `name` as `state` describes it.
pub fn write(state: &State, name: &str) -> Result<()> {
    let sb = state
        .sandboxes
        .get(name)
        .ok_or_else(|| anyhow!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`"))?;
    // The host's own files; a namespace bpfnet does not own (a runtime's
    // container) keeps the files of its owner.
    if sb.mode == NetworkMode::Host || !sb.owns_netns() {
        return Ok(());
    }
    // container:OTHER lives in OTHER's namespace: OTHER's interfaces.
    let net_owner = match &sb.mode {
        NetworkMode::Container(o) => state.sandboxes.get(o).unwrap_or(sb),
        _ => sb,
    };
    let dir = util::etc_netns_dir(name)?;
    std::fs::write(dir.join("hosts"), hosts(state, sb, net_owner))?;
    let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let responder = net_owner.endpoints.iter().find_map(|e| {
        let net = state.networks.get(&e.network)?;
        dns::table::resolves_names(net).then_some(net.gateway?)
    });
    let resolv = match responder {
        Some(gw) => dns::sandbox_resolv_conf(&host_conf, gw),
        None if !sb.dns.servers.is_empty() => sb
            .dns
            .servers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .chain(
                host_conf
                    .lines()
                    .filter(|l| !l.starts_with("nameserver"))
                    .map(|l| format!("{l}\n")),
            )
            .collect(),
        // The host's resolvers, minus loopback ones a sandbox cannot reach.
        None => host_conf
            .lines()
            .filter(|l| {
                !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1")))
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    std::fs::write(dir.join("resolv.conf"), with_own_settings(&resolv, sb))?;
    Ok(())
}

/// `--dns-search` and `--dns-option` replace the search and options lines.
fn with_own_settings(resolv: &str, sb: &Sandbox) -> String {
    let (search, options) = (&sb.dns.search, &sb.dns.options);
    let mut out: String = resolv
        .lines()
        .filter(|l| {
            let replaced_search = l.starts_with("search") && !search.is_empty();
            let replaced_options = l.starts_with("options") && !options.is_empty();
            !replaced_search && !replaced_options
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

fn hosts(state: &State, sb: &Sandbox, net_owner: &Sandbox) -> String {
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let own = match &sb.dns.hostname {
        Some(h) if *h != sb.name => format!("{h} {}", sb.name),
        _ => sb.name.clone(),
    };
    for ep in &net_owner.endpoints {
        hosts.push_str(&format!("{}\t{own}\n", ep.ip));
        if let Some(ip6) = ep.ip6 {
            hosts.push_str(&format!("{ip6}\t{own}\n"));
        }
    }
    for (name, ip) in &sb.dns.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    for link in &sb.links {
        let Some(t) = state.sandboxes.get(&link.target) else {
            continue; // removed: back when it is recreated
        };
        // Its address on a network the linker is on, as Docker's links.
        let ep = net_owner
            .endpoints
            .iter()
            .find_map(|mine| t.endpoints.iter().find(|e| e.network == mine.network))
            .or(t.endpoints.first());
        if let Some(ep) = ep {
            let names = if link.alias == t.name {
                t.name.clone()
            } else {
                format!("{} {}", link.alias, t.name)
            };
            hosts.push_str(&format!("{}\t{names}\n", ep.ip));
            if let Some(ip6) = ep.ip6 {
                hosts.push_str(&format!("{ip6}\t{names}\n"));
            }
        }
    }
    hosts
}

/// Removes the files of `name` (only those bpfnet writes; the directory
/// too when nothing else is left in it).
pub fn remove(name: &str) -> Result<()> {
    util::remove_etc_netns(name)
}

/// After `name` changed (created, connected, disconnected, removed):
/// rewrites the files of the sandboxes that link to it or share its
/// namespace. Best effort: the operation itself has committed.
pub fn refresh_dependents(state: &State, name: &str) {
    let dependents = state
        .sandboxes
        .values()
        .filter(|s| s.links.iter().any(|l| l.target == name) || s.mode.shares(name));
    for d in dependents {
        if let Err(e) = write(state, &d.name) {
            eprintln!("warning: updating /etc/netns/{}: {e:#}", d.name);
        }
    }
}
