//! The step vocabulary of operations: each step is one kernel-side change
//! with an `apply` and an idempotent `undo` that touches only what the step
//! itself made (proved by the identities it carries). Steps are journaled
//! before they run (see `journal`), so recovery can undo them after a crash.
use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    driver,
    netlink::Netlink,
    netns,
    ops::{etc, journal::Note},
    state::{Endpoint, Network, State},
};

use super::Controller;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// A new network namespace named `name`; `inode` is its identity.
    Netns {
        name: String,
        #[serde(default)]
        inode: Option<u64>,
    },
    /// `name` bound to an existing namespace (`host`, `container:OTHER`).
    NetnsAlias {
        name: String,
        source: String,
        #[serde(default)]
        inode: Option<u64>,
    },
    /// One endpoint: its veth pair (the host side's name is unique to it),
    /// the sandbox side configured, the host side wired in by the driver.
    Endpoint {
        sandbox: String,
        network: Network,
        endpoint: Endpoint,
        default_route: bool,
        #[serde(default)]
        ifindex: Option<u32>,
    },
    /// A Docker endpoint: its veth pair made in the host namespace, the
    /// container end `peer` left for Docker to move (see `docker`).
    DockerEndpoint {
        sandbox: String,
        network: Network,
        endpoint: Endpoint,
        peer: String,
        #[serde(default)]
        mtu: Option<u32>,
        #[serde(default)]
        ifindex: Option<u32>,
    },
    /// `/etc/netns/NAME/{hosts,resolv.conf}` written from the new state.
    EtcFiles {
        sandbox: String,
    },
    /// A network's kernel side.
    Network {
        network: Network,
    },
    /// Removals (operations that remove are completed after a crash, not
    /// undone, so these have no undo).
    EndpointDown {
        sandbox: String,
        network: Network,
        endpoint: Endpoint,
        /// The gateway that becomes the sandbox's default route when the
        /// endpoint that carried it goes.
        next_default: Option<Ipv4Addr>,
        /// The sandbox's namespace goes right after (`rm`, `datapath
        /// unload`): only the datapath lets go of the endpoint here; the
        /// veth pair dies with the namespace, which the kernel tears down
        /// after the command returned (as `ip netns del`), instead of this
        /// command waiting for a device's deletion or move (an RCU grace
        /// period each: tens of ms on a busy host). Many namespaces going
        /// in one operation are torn down in one batch, and
        /// [`Step::LinksGone`] waits for them. A namespace some process
        /// still holds keeps its pair: the host side carries nothing (the
        /// datapath forgot it) and `bpfnet gc` deletes it (bpfnet's alias
        /// names an endpoint that is gone).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        leave: bool,
    },
    /// Waits until these host-side veths are gone with their namespaces;
    /// deletes those a namespace still held (a process in it) keeps.
    LinksGone {
        links: Vec<String>,
    },
    NetnsDelete {
        name: String,
    },
    EtcRemove {
        sandbox: String,
    },
    NetworkDown {
        network: Network,
    },
}

impl Step {
    /// Its fault point's name.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Netns { .. } => "step:netns",
            Step::NetnsAlias { .. } => "step:netns-alias",
            Step::Endpoint { .. } => "step:endpoint",
            Step::DockerEndpoint { .. } => "step:docker-endpoint",
            Step::EtcFiles { .. } => "step:etc-files",
            Step::Network { .. } => "step:network",
            Step::EndpointDown { .. } => "step:endpoint-down",
            Step::NetnsDelete { .. } => "step:netns-delete",
            Step::LinksGone { .. } => "step:links-gone",
            Step::EtcRemove { .. } => "step:etc-remove",
            Step::NetworkDown { .. } => "step:network-down",
        }
    }

    /// Fills in an identity recovery found in the journal.
    pub fn apply_note(&mut self, note: &Note) {
        match self {
            Step::Netns { inode, .. } | Step::NetnsAlias { inode, .. } => {
                *inode = note.inode.or(*inode);
            }
            Step::Endpoint { ifindex, .. } | Step::DockerEndpoint { ifindex, .. } => {
                *ifindex = note.ifindex.or(*ifindex)
            }
            _ => {}
        }
    }
}

impl Controller {
    /// Runs step `i`; identities the kernel hands back are journaled before
    /// they become visible, and written into `step` and `target`.
    pub(super) async fn apply(
        &self,
        i: usize,
        step: &mut Step,
        target: &mut State,
        journal: &mut super::journal::Journal,
    ) -> Result<()> {
        match step {
            Step::Netns { name, inode } => {
                let mut noted = |ino: u64| {
                    *inode = Some(ino);
                    journal.note(&Note {
                        step: i,
                        inode: Some(ino),
                        ..Note::default()
                    })
                };
                netns::create(name, &mut noted)?;
                let ns = netns::open(name)?;
                let nl = Netlink::open_in(&ns)?;
                let lo = nl.link_by_name("lo").await?.context("sandbox without lo")?;
                nl.set_up(lo.index).await
            }
            Step::NetnsAlias {
                name,
                source,
                inode,
            } => {
                let mut noted = |ino: u64| {
                    *inode = Some(ino);
                    journal.note(&Note {
                        step: i,
                        inode: Some(ino),
                        ..Note::default()
                    })
                };
                netns::create_alias(name, Path::new(source), &mut noted)
            }
            Step::Endpoint {
                sandbox,
                network,
                endpoint,
                default_route,
                ifindex,
            } => {
                let sb = target
                    .sandboxes
                    .get(sandbox.as_str())
                    .with_context(|| format!("sandbox {sandbox:?} is not in the plan"))?;
                let ns = netns::open_sandbox(sb)?;
                let mut noted = |index: u32| {
                    *ifindex = Some(index);
                    journal.note(&Note {
                        step: i,
                        ifindex: Some(index),
                        ..Note::default()
                    })
                };
                let index = self
                    .host
                    .endpoint_up(network, endpoint, &ns, *default_route, &mut noted)
                    .await?;
                endpoint.host_ifindex = index;
                if let Some(ep) = target
                    .sandboxes
                    .get_mut(sandbox.as_str())
                    .and_then(|s| s.endpoints.iter_mut().find(|e| e.id == endpoint.id))
                {
                    ep.host_ifindex = index;
                }
                Ok(())
            }
            Step::DockerEndpoint {
                sandbox,
                network,
                endpoint,
                peer,
                mtu,
                ifindex,
            } => {
                let mut noted = |index: u32| {
                    *ifindex = Some(index);
                    journal.note(&Note {
                        step: i,
                        ifindex: Some(index),
                        ..Note::default()
                    })
                };
                let index = self
                    .host
                    .docker_endpoint_up(network, endpoint, peer, *mtu, &mut noted)
                    .await?;
                endpoint.host_ifindex = index;
                if let Some(ep) = target
                    .sandboxes
                    .get_mut(sandbox.as_str())
                    .and_then(|s| s.endpoints.iter_mut().find(|e| e.id == endpoint.id))
                {
                    ep.host_ifindex = index;
                }
                Ok(())
            }
            Step::EtcFiles { sandbox } => etc::write(target, sandbox),
            Step::Network { network } => driver::of(network).network_up(&self.host, network).await,
            Step::EndpointDown {
                sandbox,
                network,
                endpoint,
                next_default,
                leave,
            } => {
                if *leave {
                    let link = self.host.nl.link_by_name(&endpoint.host_ifname).await?;
                    let ifindex = link
                        .map(|l| l.index)
                        .or((endpoint.host_ifindex != 0).then_some(endpoint.host_ifindex));
                    return driver::of(network)
                        .endpoint_detach(&self.host, network, endpoint, ifindex)
                        .await;
                }
                self.host.endpoint_down(network, endpoint, None).await?;
                if let Some(gw) = next_default {
                    let ns = match target.sandboxes.get(sandbox.as_str()) {
                        Some(sb) => netns::open_sandbox(sb),
                        None => netns::open(sandbox),
                    };
                    if let Ok(ns) = ns {
                        let nl = Netlink::open_in(&ns)?;
                        nl.add_default_route(*gw).await?;
                        // The IPv6 default route moves with it, to the
                        // network that now carries the IPv4 one, if that
                        // network has IPv6.
                        let carrier = target.sandboxes.get(sandbox.as_str()).and_then(|sb| {
                            sb.endpoints.iter().find_map(|e| {
                                let n = target.networks.get(&e.network)?;
                                (n.gateway == Some(*gw) && !n.internal).then_some((e, n))
                            })
                        });
                        if let Some((e, n)) = carrier {
                            if let (Some(_), Some(gw6)) = (e.ip6, n.gateway6) {
                                if let Some(link) = nl.link_by_name(&e.ifname).await? {
                                    nl.add_default_route6(gw6, link.index).await?;
                                }
                            }
                        }
                    }
                }
                Ok(())
            }
            Step::NetnsDelete { name } => netns::delete(name),
            Step::LinksGone { links } => self.links_gone(links).await,
            Step::EtcRemove { sandbox } => etc::remove(sandbox),
            Step::NetworkDown { network } => {
                driver::of(network).network_down(&self.host, network).await
            }
        }
    }

    /// Undoes a step that ran, ran in part or did not run at all. `live` is
    /// the committed state: what it holds is never undone.
    pub(super) async fn undo(&self, step: &Step, live: &State) -> Result<()> {
        match step {
            Step::Netns { name, inode } | Step::NetnsAlias { name, inode, .. } => {
                if live.sandboxes.contains_key(name) {
                    return Ok(());
                }
                if let Some(inode) = inode {
                    netns::delete_if(name, *inode)?;
                }
                Ok(())
            }
            Step::Endpoint {
                network,
                endpoint,
                ifindex,
                ..
            }
            | Step::DockerEndpoint {
                network,
                endpoint,
                ifindex,
                ..
            } => {
                let committed = live.endpoints().any(|(_, e)| e.id == endpoint.id);
                if committed {
                    return Ok(());
                }
                self.host.endpoint_down(network, endpoint, *ifindex).await
            }
            Step::EtcFiles { sandbox } => {
                if live.sandboxes.contains_key(sandbox) {
                    etc::write(live, sandbox)
                } else {
                    etc::remove(sandbox)
                }
            }
            Step::Network { network } => {
                if live.networks.contains_key(&network.name) {
                    return Ok(());
                }
                driver::of(network).network_down(&self.host, network).await
            }
            Step::EndpointDown { .. }
            | Step::LinksGone { .. }
            | Step::NetnsDelete { .. }
            | Step::EtcRemove { .. }
            | Step::NetworkDown { .. } => Ok(()),
        }
    }

    /// Waits for the kernel to tear down the namespaces, and the veth pairs
    /// in them, that the steps before released: for as long as it makes
    /// progress. What is left then (a namespace some process holds) is
    /// deleted here, one by one.
    async fn links_gone(&self, links: &[String]) -> Result<()> {
        const STALL: std::time::Duration = std::time::Duration::from_secs(2);
        let mut left = links.len();
        let mut progress = std::time::Instant::now();
        loop {
            let present: std::collections::HashSet<String> = self
                .host
                .nl
                .links()
                .await?
                .into_iter()
                .map(|l| l.name)
                .collect();
            let still: Vec<&String> = links.iter().filter(|l| present.contains(*l)).collect();
            if still.is_empty() {
                return Ok(());
            }
            if still.len() < left {
                left = still.len();
                progress = std::time::Instant::now();
            } else if progress.elapsed() >= STALL {
                for name in still {
                    if let Some(l) = self.host.nl.link_by_name(name).await? {
                        self.host.nl.delete_link(l.index).await?;
                    }
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
