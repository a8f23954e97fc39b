//! `bpfnet gc` and `bpfnet datapath unload`. gc first recovers an operation
//! a crash interrupted (from its journal), then forgets sandboxes whose
//! namespace vanished, and finally removes datapath entries and pins that no
//! endpoint of the committed state owns: a map entry goes only when the
//! endpoint it belongs to is dead. Live endpoints' conntrack quotas are
//! recounted from the table.
use std::collections::BTreeSet;

use anyhow::Result;

use super::{network::BRIDGE_PREFIX, sandbox::HOST_VETH_PREFIX, Controller};
use crate::{
    datapath::Datapath,
    dns, driver,
    driver::Host,
    netlink::{Netlink, OWNER_ALIAS},
    netns,
    paths::Paths,
    state::State,
    store::Locked,
    util::ip_key,
};

/// Whether a link name has the exact shape of the ones bpfnet makes: its
/// prefix and `hex` lowercase hex digits of an id (gc never touches others).
fn is_ours(name: &str, prefix: &str, hex: usize) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == hex
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl Controller {
    /// `bpfnet gc`: reconciles kernel and state; returns what it removed.
    pub async fn gc(&mut self) -> Result<Vec<String>> {
        let mut removed = vec![];
        if let Some(r) = self.recover().await? {
            removed.push(r);
        }
        let gone: Vec<String> = self
            .state()
            .sandboxes
            .values()
            .filter(|s| match &s.netns {
                None => !netns::exists(&s.name),
                // A runtime's namespace is gone when its path is missing or
                // bound to another namespace; a live one is never touched.
                Some(path) => s
                    .cni
                    .as_ref()
                    .is_some_and(|c| !netns::foreign_alive(path, c.netns_inode)),
            })
            .map(|s| s.name.clone())
            .collect();
        self.sandboxes_rm(&gone).await?;
        removed.extend(
            gone.iter()
                .map(|n| format!("sandbox {n} (its namespace was gone)")),
        );
        // Docker's containers: what Docker forgot to tell (DeleteEndpoint
        // failed, or the plugin was down).
        if self.state().sandboxes.values().any(|s| s.docker.is_some()) {
            let listed = match crate::docker::client::Client::from_env()
                .endpoint_ids()
                .await
            {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("warning: {e:#}; Docker's sandboxes are judged by their veths alone");
                    None
                }
            };
            for (name, why) in self.dead_docker_sandboxes(listed.as_ref()).await? {
                self.sandbox_rm(&name, true).await?;
                removed.push(format!("sandbox {name} ({why})"));
            }
        }
        let state = self.state().clone();
        let owned: BTreeSet<&str> = state
            .endpoints()
            .map(|(_, e)| e.host_ifname.as_str())
            .collect();
        let endpoint_ids: BTreeSet<&str> = state.endpoints().map(|(_, e)| e.id.as_str()).collect();
        let network_ids: BTreeSet<&str> = state.networks.values().map(|n| n.id.as_str()).collect();
        for link in self.host.nl.links().await? {
            // A link is bpfnet's when it carries bpfnet's alias (set in the
            // request that made it) naming an object; stray when that
            // object is not in the state. The name alone proves nothing.
            let owner = link
                .alias
                .as_deref()
                .and_then(|a| a.strip_prefix(OWNER_ALIAS));
            let stray_veth = is_ours(&link.name, HOST_VETH_PREFIX, 10)
                && link.kind.as_deref() == Some("veth")
                && owner
                    .and_then(|o| o.strip_prefix("endpoint:"))
                    .is_some_and(|id| !endpoint_ids.contains(id));
            let stray_bridge = is_ours(&link.name, BRIDGE_PREFIX, 8)
                && link.kind.as_deref() == Some("bridge")
                && owner
                    .and_then(|o| o.strip_prefix("network:"))
                    .is_some_and(|id| !network_ids.contains(id));
            if stray_veth || stray_bridge {
                self.host.nl.delete_link(link.index).await?;
                removed.push(format!("link {}", link.name));
            }
        }
        for ifname in self.host.dp.attached_interfaces() {
            if !owned.contains(ifname.as_str()) {
                self.host.dp.detach(&ifname)?;
                removed.push(format!("datapath filters of {ifname}"));
            }
        }
        removed.extend(sweep_datapath(&self.host, &state)?);
        if !removed.is_empty() {
            let networks: Vec<String> = state.networks.keys().cloned().collect();
            self.resync(&networks).await?;
        } else {
            // The NAT table as the state says, whatever a crash left.
            crate::nat::apply(&self.paths, &crate::nat::Ruleset::of(&state))?;
        }
        Ok(removed)
    }

    /// `bpfnet datapath unload`: everything bpfnet made goes.
    pub async fn unload(paths: &Paths) -> Result<Vec<String>> {
        let mut removed = vec![];
        let mut locked = Locked::acquire(paths)?;
        dns::remove(paths);
        if let Some(dp) = Datapath::open(paths) {
            let mut c = Controller {
                paths: paths.clone(),
                locked,
                host: Host {
                    nl: Netlink::open()?,
                    dp,
                },
            };
            if let Some(r) = c.recover().await? {
                removed.push(r);
            }
            let names: Vec<String> = c.state().sandboxes.keys().cloned().collect();
            // One operation for all of them: one journal, one commit.
            c.sandboxes_rm(&names).await?;
            removed.extend(names.iter().map(|n| format!("sandbox {n}")));
            for net in c.state().networks.values() {
                driver::of(net).network_down(&c.host, net).await?;
                removed.push(format!("network {}", net.name));
            }
            c.locked.set_state(State::default());
            removed.extend(c.gc().await?);
            locked = c.locked;
        }
        // Again: the commits above rewrote its configuration file.
        dns::remove(paths);
        crate::nat::remove(paths)?;
        if Datapath::unload(paths)? {
            removed.push(format!("pins under {}", paths.pin_root().display()));
        }
        drop(locked);
        for f in [
            paths.state_file(),
            paths.state_log(),
            super::journal::path(paths),
            paths.lock_file(),
        ] {
            if std::fs::remove_file(&f).is_ok() {
                removed.push(format!("{}", f.display()));
            }
        }
        let _ = std::fs::remove_dir(&paths.state_dir);
        Ok(removed)
    }
}

/// Removes the datapath entries no endpoint of `state` owns: endpoints by an
/// ifindex no live endpoint has, FDB entries pointing at such a port,
/// neighbours of an address no live endpoint of that network has.
fn sweep_datapath(host: &Host, state: &State) -> Result<Vec<String>> {
    let live_ifindex: BTreeSet<u32> = state.endpoints().map(|(_, e)| e.host_ifindex).collect();
    let live_addr: BTreeSet<(u32, u32)> = state
        .endpoints()
        .filter_map(|(_, e)| Some((state.networks.get(&e.network)?.net_id, ip_key(e.ip))))
        .collect();
    let mut removed = vec![];
    for (ifindex, ep) in host.dp.endpoints()? {
        if !live_ifindex.contains(&ifindex) {
            host.dp.remove_endpoint_entries(Some(ifindex), &ep)?;
            removed.push(format!("datapath entries of ifindex {ifindex}"));
        }
    }
    let live_slots: BTreeSet<u32> = state.endpoints().map(|(_, e)| e.slot).collect();
    host.dp.recount_conntrack(&live_slots)?;
    let n = host.dp.remove_unowned(&live_ifindex, &live_addr)?;
    if n > 0 {
        removed.push(format!("{n} FDB and neighbour entries of dead endpoints"));
    }
    let live_addr6: BTreeSet<(u32, [u8; 16])> = state
        .endpoints()
        .filter_map(|(_, e)| {
            let net = state.networks.get(&e.network)?;
            let ep6 = crate::driver::ebpf::datapath_endpoint6(net, e)?;
            Some([(net.net_id, ep6.ip6), (net.net_id, ep6.link_local)])
        })
        .flatten()
        .collect();
    let n = host.dp.remove_unowned6(&live_ifindex, &live_addr6)?;
    if n > 0 {
        removed.push(format!(
            "{n} IPv6 endpoint and neighbour entries of dead endpoints"
        ));
    }
    Ok(removed)
}
