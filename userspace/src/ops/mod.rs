//! The operations: everything a command changes goes through here. Each
//! mutating operation checks everything it can against the state first
//! (so bad input changes nothing), then becomes a [`Plan`] — its steps and
//! the state it leads to — which [`Controller::execute`] runs: journal,
//! steps, commit (derived datapath state, policy, the state file, the name
//! responder), or undo in reverse collecting every error. Recovery of an
//! operation a crash interrupted runs at the start of every mutating
//! command and in `bpfnet gc`.
pub mod capacity;
pub mod cni;
pub mod docker;
pub mod etc;
pub mod gc;
pub mod journal;
pub mod network;
pub mod policy;
pub mod ports;
pub mod recover;
pub mod sandbox;
pub mod step;

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use ipnet::Ipv4Net;

use crate::{
    datapath::{Datapath, LoadReport},
    dns,
    driver::{self, with_undo_errors, Host},
    fault, ipam, nat,
    netlink::Netlink,
    paths::Paths,
    policy as compile,
    state::{DriverKind, Network, Sandbox, State},
    store::Locked,
    util::{new_id, now_rfc3339},
};
use journal::{AfterCommit, Intent, Journal, Recovery, Redo};
use step::Step;

pub use network::NetworkCreate;
pub use sandbox::SandboxCreate;

/// The datapath's policy entries, as `policy::compile` makes them.
type PolicyEntries =
    std::collections::BTreeMap<bpfnet_common::PolicyKey, bpfnet_common::PolicyValue>;

/// The state (held under its lock) and the kernel to act on.
pub struct Controller {
    pub paths: Paths,
    pub locked: Locked,
    pub host: Host,
}

/// An operation, ready to run.
pub struct Plan {
    pub what: String,
    pub recovery: Recovery,
    pub steps: Vec<Step>,
    /// The state once every step has run.
    pub target: State,
    /// Networks whose membership changes (their derived datapath state is
    /// brought in line at commit).
    pub networks: Vec<String>,
    /// A sandbox whose dependents' /etc files must follow it.
    pub sandbox: Option<String>,
    /// What follows the commit (journaled with the plan).
    pub after: Vec<AfterCommit>,
}

/// Docker's daemon-level `--icc` lives on the default bridge as this option.
pub const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

fn builtin(name: &str, driver: DriverKind, net_id: u32, subnet: Option<Ipv4Net>) -> Network {
    Network {
        id: new_id(),
        name: name.into(),
        created: now_rfc3339(),
        driver,
        net_id,
        subnet,
        gateway: subnet.map(|s| std::net::Ipv4Addr::from(u32::from(s.network()) + 1)),
        subnet6: None,
        gateway6: None,
        internal: false,
        options: BTreeMap::new(),
        bridge: None,
    }
}

impl Controller {
    /// Locks the state, opens (or loads) the datapath, recovers what a crash
    /// interrupted and makes sure the built-in networks exist.
    pub async fn open(paths: &Paths) -> Result<Self> {
        if !Datapath::is_loaded(paths) {
            // First use, or a new map layout: a full load brings the kernel
            // in line with the state.
            return Ok(Self::load(paths, None).await?.1);
        }
        // A command that changes something restarts or refreshes the
        // responder at its commit (and one that fails changed nothing).
        Self::lock(paths)?.ready(false).await
    }

    /// What every command does once it holds the lock: recover what a crash
    /// interrupted, make sure the built-in networks exist; and, with
    /// `responder`, keep the name responder running.
    async fn ready(mut self, responder: bool) -> Result<Self> {
        self.recover().await?;
        if !self.state().networks.contains_key("bridge") {
            // A state without the built-in networks (removed by hand): a
            // load re-creates them.
            self.reload(None).await?;
        }
        if responder {
            dns::ensure_running(&self.paths, self.state());
        }
        Ok(self)
    }

    /// For commands that only read (ps, inspect, ls, stats): they never
    /// wait for the lock. When it is free they take it and do what every
    /// command does (recovery, built-ins, the responder kept running);
    /// when another command holds it they read the last committed state.
    pub async fn open_read_only(paths: &Paths) -> Result<Self> {
        if !Datapath::is_loaded(paths) {
            return Self::open(paths).await;
        }
        if let Some(locked) = Locked::try_acquire(paths)? {
            return Self::with_lock(paths, locked)?.ready(true).await;
        }
        let locked = Locked::read_only(paths)?;
        match Datapath::open(paths) {
            Some(dp) if locked.state().networks.contains_key("bridge") => Ok(Controller {
                paths: paths.clone(),
                locked,
                host: Host {
                    nl: Netlink::open()?,
                    dp,
                },
            }),
            _ => Self::open(paths).await,
        }
    }

    fn lock(paths: &Paths) -> Result<Self> {
        Self::with_lock(paths, Locked::acquire(paths)?)
    }

    fn with_lock(paths: &Paths, locked: Locked) -> Result<Self> {
        Ok(Controller {
            paths: paths.clone(),
            locked,
            host: Host {
                nl: Netlink::open()?,
                dp: Datapath::open_or_load(paths)?,
            },
        })
    }

    /// `bpfnet datapath load`: (re)load the programs, then make the kernel
    /// match the state (networks, endpoints, attachments).
    pub async fn load(paths: &Paths, icc: Option<bool>) -> Result<(LoadReport, Self)> {
        let locked = Locked::acquire(paths)?;
        let mut c = Controller {
            paths: paths.clone(),
            locked,
            host: Host {
                nl: Netlink::open()?,
                dp: Datapath::open_or_load(paths)?,
            },
        };
        c.recover().await?;
        let report = c.reload(icc).await?;
        Ok((report, c))
    }

    /// Loads the programs (atomically replacing those of every attachment),
    /// then re-creates every map entry and attachment the state implies, and
    /// only then removes the pins of another map layout. Journaled: a crash
    /// anywhere in it is completed by running it again.
    async fn reload(&mut self, icc: Option<bool>) -> Result<LoadReport> {
        let journal = Journal::begin(
            &self.paths,
            &Intent {
                id: new_id(),
                what: "datapath load".into(),
                recovery: Recovery::Complete(Redo::Load),
                steps: vec![],
                after: vec![],
            },
        )?;
        fault::point("load:journaled");
        let report = Datapath::load(&self.paths)?;
        self.host.dp = Datapath::open_or_load(&self.paths)?;
        fault::point("load:programs");
        let state = self.locked.state_mut();
        for (name, driver) in [
            ("bridge", DriverKind::Bridge),
            ("host", DriverKind::Host),
            ("none", DriverKind::Null),
        ] {
            if !state.networks.contains_key(name) {
                let (id, subnet) = match driver {
                    DriverKind::Bridge => (
                        capacity::network_id(state)?,
                        Some(ipam::DEFAULT_BRIDGE_SUBNET.parse().expect("valid")),
                    ),
                    _ => (0, None),
                };
                let net = builtin(name, driver, id, subnet);
                state.networks.insert(name.into(), net);
            }
        }
        if let Some(icc) = icc {
            // sync() below brings the datapath's flags in line.
            let bridge = state.networks.get_mut("bridge").expect("built in");
            bridge.options.insert(ICC_OPTION.into(), icc.to_string());
        }
        self.sync().await?;
        nat::apply(&self.paths, &nat::Ruleset::of(self.state()))?;
        fault::point("load:synced");
        self.commit_derived(&compile::compile(self.state()), true)?;
        fault::point("load:committed");
        Datapath::remove_other_layouts(&self.paths)?;
        journal.end()?;
        Ok(report)
    }

    pub fn state(&self) -> &State {
        self.locked.state()
    }

    pub fn datapath(&self) -> &Datapath {
        &self.host.dp
    }

    fn network(&self, name: &str) -> Result<&Network> {
        self.state().networks.get(name).ok_or_else(|| {
            anyhow!("network {name:?} not found; list networks with `bpfnet network ls`")
        })
    }

    fn sandbox(&self, name: &str) -> Result<&Sandbox> {
        self.state()
            .sandboxes
            .get(name)
            .map(|s| &**s)
            .ok_or_else(|| anyhow!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`"))
    }

    /// Runs a plan: journal, steps, commit; on error, undo in reverse.
    pub async fn execute(&mut self, mut plan: Plan) -> Result<()> {
        // A policy that would not fit the datapath is refused before
        // anything is written, with a line naming the limit.
        let policy = compile::compile_checked(&plan.target)?;
        let id = new_id();
        let intent = Intent {
            id: id.clone(),
            what: plan.what.clone(),
            recovery: plan.recovery.clone(),
            steps: plan.steps.clone(),
            after: plan.after.clone(),
        };
        let mut journal = Journal::begin(&self.paths, &intent)?;
        fault::point("journaled");
        let mut ran = 0;
        let mut result = Ok(());
        for i in 0..plan.steps.len() {
            let mut step = plan.steps[i].clone();
            ran = i + 1;
            result = self
                .apply(i, &mut step, &mut plan.target, &mut journal)
                .await;
            plan.steps[i] = step;
            if result.is_err() {
                break;
            }
            fault::point(plan.steps[i].name());
        }
        if result.is_ok() {
            plan.target.last_op = Some(id);
            // (Not used after: undo works from the committed state.)
            let target = std::mem::take(&mut plan.target);
            result = self.commit(target, &plan.networks, &policy).await;
        }
        match result {
            Ok(()) => {
                fault::point("committed");
                for name in &plan.networks {
                    let warning = self
                        .state()
                        .networks
                        .get(name)
                        .and_then(|n| capacity::flood_warning(self.state(), n));
                    if let Some(w) = warning {
                        eprintln!("warning: {w}");
                    }
                }
                if let Some(name) = &plan.sandbox {
                    etc::refresh_dependents(self.state(), name);
                }
                for a in &plan.after {
                    self.after_commit(a)?;
                    fault::point("after-commit");
                }
                journal.end()
            }
            Err(e) => {
                let mut errors = vec![];
                if plan.recovery == Recovery::RollBack {
                    let live = self.state().clone();
                    for step in plan.steps[..ran].iter().rev() {
                        if let Err(u) = self.undo(step, &live).await {
                            errors.push(u);
                        }
                    }
                }
                if let Err(u) = self.resync(&plan.networks).await {
                    errors.push(u);
                }
                if let Err(u) = journal.end() {
                    errors.push(u);
                }
                Err(with_undo_errors(e, errors))
            }
        }
    }

    /// Makes `target` the state: derived datapath state first (broadcast
    /// ports, policy), then the state file — the commit point — then the
    /// name responder.
    async fn commit(
        &mut self,
        target: State,
        networks: &[String],
        policy: &PolicyEntries,
    ) -> Result<()> {
        for name in networks {
            if let Some(net) = target.networks.get(name) {
                driver::of(net)
                    .sync_members(&self.host, &target, net)
                    .await?;
            }
        }
        let rules = nat::Ruleset::of(&target);
        if rules != nat::Ruleset::of(self.state()) {
            nat::apply(&self.paths, &rules)?;
        }
        // The policy maps are rewritten whole: only when they change (most
        // creates and removals name no rule).
        let same_policy = compile::compile(self.state()) == *policy;
        self.locked.set_state(target);
        let saved = self.commit_derived(policy, !same_policy);
        if saved.is_err() {
            self.locked.revert();
        }
        saved
    }

    /// The policy compiled from the state, and the state file; then the
    /// responder (best effort).
    fn commit_derived(&mut self, policy: &PolicyEntries, changed: bool) -> Result<()> {
        if changed {
            self.host.dp.set_policy(policy)?;
        }
        self.locked.save()?;
        // Names follow the saved state; the responder confirms before we return.
        dns::ensure_running(&self.paths, self.state());
        Ok(())
    }

    /// Brings derived datapath state back in line with the committed state
    /// after an undo.
    async fn resync(&self, networks: &[String]) -> Result<()> {
        let state = self.state();
        for name in networks {
            if let Some(net) = state.networks.get(name) {
                driver::of(net).sync_members(&self.host, state, net).await?;
            }
        }
        nat::apply(&self.paths, &nat::Ruleset::of(state))?;
        self.host.dp.set_policy(&compile::compile(state))
    }

    /// Re-creates every map entry and attachment the state implies (after a
    /// load, which may bring a new map layout).
    async fn sync(&mut self) -> Result<()> {
        let mut state = self.state().clone();
        for net in state.networks.values() {
            driver::of(net).network_up(&self.host, net).await?;
        }
        let attached = self.host.dp.attached_interfaces();
        let networks = state.networks.clone();
        for sb in state.sandboxes.values_mut() {
            for ep in &mut sb.endpoints {
                let net = &networks[&ep.network];
                if net.driver != DriverKind::Bridge {
                    continue;
                }
                let Some(link) = self.host.nl.link_by_name(&ep.host_ifname).await? else {
                    continue; // gc's business
                };
                // State files from before the ifindex was recorded.
                ep.host_ifindex = link.index;
                let dp_ep = driver::ebpf::datapath_endpoint(net, ep, link.mac.unwrap_or_default())?;
                let dp_ep6 = driver::ebpf::datapath_endpoint6(net, ep);
                if let Some(ep6) = &dp_ep6 {
                    self.host.dp.add_endpoint6(link.index, ep6)?;
                }
                self.host.dp.add_endpoint(link.index, &dp_ep)?;
                if !attached.contains(&ep.host_ifname) {
                    self.host.dp.attach(&ep.host_ifname)?;
                }
                self.host.dp.publish_endpoint(link.index, &dp_ep)?;
                if let Some(ep6) = &dp_ep6 {
                    self.host.dp.publish_endpoint6(net.net_id, ep6, ep.mac)?;
                }
            }
        }
        for net in state.networks.values() {
            driver::of(net)
                .sync_members(&self.host, &state, net)
                .await?;
        }
        self.locked.set_state(state);
        Ok(())
    }
}
