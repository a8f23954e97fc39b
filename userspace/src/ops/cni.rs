//! Attachments a container runtime makes through CNI (`bpfnet-cni`). A
//! container is a sandbox like any other — listed, named, resolvable, under
//! policy — whose namespace is the runtime's (`Sandbox::netns`): bpfnet adds
//! and removes its endpoints (one per attachment, `CNI_CONTAINERID` +
//! `CNI_IFNAME`), never the namespace itself nor its /etc files.
use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{bail, Result};

use super::{
    journal::{Recovery, Redo},
    sandbox::{plan_endpoint, plan_endpoint_removal},
    Controller, Plan,
};
use crate::{
    netns,
    state::{CniAttachment, Endpoint, NetworkMode, Sandbox},
    util::{check_name, new_id, now_rfc3339},
};

/// One `ADD`.
#[derive(Clone, Debug)]
pub struct CniAdd {
    pub container_id: String,
    /// `CNI_NETNS`: the runtime's namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface made in it.
    pub ifname: String,
    /// The bpfnet network (`network` of the plugin's configuration).
    pub network: String,
    /// `name` of the network configuration (what `GC` is per).
    pub config: String,
    /// `K8S_POD_NAME` from `CNI_ARGS`, when given.
    pub pod_name: Option<String>,
}

/// How long a sandbox name made from a container id is (Docker's short id).
pub const SHORT_ID: usize = 12;

impl Controller {
    /// The sandbox of a container attached through CNI.
    pub fn cni_sandbox(&self, container_id: &str) -> Option<&Sandbox> {
        self.state()
            .sandboxes
            .values()
            .find(|s| {
                s.cni
                    .as_ref()
                    .is_some_and(|c| c.container_id == container_id)
            })
            .map(|s| &**s)
    }

    /// The sandbox and endpoint of the attachment (`container_id`, `ifname`).
    pub fn cni_attachment(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Option<(&Sandbox, &Endpoint)> {
        let sb = self.cni_sandbox(container_id)?;
        Some((sb, sb.endpoints.iter().find(|e| e.ifname == ifname)?))
    }

    /// The name a new container's sandbox gets: `K8S_POD_NAME` when it is a
    /// valid name no other sandbox has, else the first 12 characters of the
    /// container id.
    fn cni_name(&self, req: &CniAdd) -> Result<String> {
        let free =
            |n: &str| check_name("sandbox", n).is_ok() && !self.state().sandboxes.contains_key(n);
        if let Some(pod) = req.pod_name.as_deref().filter(|p| free(p)) {
            return Ok(pod.to_string());
        }
        let short: String = req.container_id.chars().take(SHORT_ID).collect();
        if !free(&short) {
            bail!(
                "container {:?}: neither K8S_POD_NAME {:?} nor its short id {short:?} is free as a sandbox name; remove the sandbox that has it (`bpfnet rm`)",
                req.container_id,
                req.pod_name.as_deref().unwrap_or("")
            );
        }
        Ok(short)
    }

    /// `ADD`: attaches the container to the network — a new sandbox for a
    /// container seen first, another endpoint for one attached already.
    pub async fn cni_add(&mut self, req: CniAdd) -> Result<(Sandbox, Endpoint)> {
        self.network(&req.network)?;
        let inode = netns::foreign_inode(&req.netns)?;
        let mut target = self.state().clone();
        let name = match self.cni_sandbox(&req.container_id) {
            Some(sb) => {
                let same_ns = sb.netns.as_deref() == Some(req.netns.as_path())
                    && sb.cni.as_ref().is_some_and(|c| c.netns_inode == inode);
                if !same_ns {
                    bail!(
                        "container {:?} is attached already in another namespace ({}); DEL it first",
                        req.container_id,
                        sb.netns_path().display()
                    );
                }
                if sb.endpoints.iter().any(|e| e.ifname == req.ifname) {
                    bail!(
                        "container {:?} already has interface {:?} (sandbox {:?}); DEL it first",
                        req.container_id,
                        req.ifname,
                        sb.name
                    );
                }
                sb.name.clone()
            }
            None => {
                let name = self.cni_name(&req)?;
                target.sandboxes.insert(
                    name.clone(),
                    Sandbox {
                        id: new_id(),
                        name: name.clone(),
                        created: now_rfc3339(),
                        mode: NetworkMode::Networks(req.network.clone()),
                        endpoints: vec![],
                        aliases: vec![],
                        links: vec![],
                        ports: vec![],
                        exposed: vec![],
                        dns: Default::default(),
                        netns: Some(req.netns.clone()),
                        cni: Some(CniAttachment {
                            container_id: req.container_id.clone(),
                            netns_inode: inode,
                            configs: BTreeMap::new(),
                        }),
                        docker: None,
                    }
                    .into(),
                );
                name
            }
        };
        let step = plan_endpoint(
            &mut target,
            &req.network,
            &name,
            vec![],
            (None, None),
            Some(&req.ifname),
        )?;
        if let Some(cni) = target.sandboxes.get_mut(&name).and_then(|s| s.cni.as_mut()) {
            cni.configs.insert(req.ifname.clone(), req.config.clone());
        }
        self.execute(Plan {
            what: format!(
                "cni add {name} (container {}, {})",
                req.container_id, req.ifname
            ),
            recovery: Recovery::RollBack,
            steps: vec![step],
            target,
            networks: vec![req.network.clone()],
            sandbox: Some(name.clone()),
            after: vec![],
        })
        .await?;
        let sb = Sandbox::clone(&self.state().sandboxes[&name]);
        let ep = sb
            .endpoints
            .iter()
            .find(|e| e.ifname == req.ifname)
            .cloned()
            .expect("committed");
        Ok((sb, ep))
    }

    /// `DEL`: removes the attachment, and the sandbox with its last one.
    /// Nothing to remove is fine (returns false): DEL is idempotent.
    pub async fn cni_del(&mut self, container_id: &str, ifname: &str) -> Result<bool> {
        let Some((sb, ep)) = self.cni_attachment(container_id, ifname) else {
            return Ok(false);
        };
        let (name, network) = (sb.name.clone(), ep.network.clone());
        if sb.endpoints.len() == 1 {
            self.sandbox_rm(&name, true).await?;
            return Ok(true);
        }
        let mut target = self.state().clone();
        let step = plan_endpoint_removal(&mut target, &network, &name)?;
        if let Some(cni) = target.sandboxes.get_mut(&name).and_then(|s| s.cni.as_mut()) {
            cni.configs.remove(ifname);
        }
        self.execute(Plan {
            what: format!("cni del {name} (container {container_id}, {ifname})"),
            recovery: Recovery::Complete(Redo::Disconnect {
                network: network.clone(),
                sandbox: name.clone(),
            }),
            steps: vec![step],
            target,
            networks: vec![network],
            sandbox: Some(name),
            after: vec![],
        })
        .await?;
        Ok(true)
    }

    /// `GC` of the network configuration `config`: removes every attachment
    /// made through it that `valid` (container id, interface) does not list,
    /// and nothing else. Goes on after an error; returns what it removed and
    /// the errors.
    pub async fn cni_gc(
        &mut self,
        config: &str,
        valid: &[(String, String)],
    ) -> (Vec<String>, Vec<String>) {
        let stale: Vec<(String, String, String)> = self
            .state()
            .sandboxes
            .values()
            .filter_map(|s| Some((s, s.cni.as_ref()?)))
            .flat_map(|(s, c)| {
                c.configs
                    .iter()
                    .filter(|(ifname, conf)| {
                        conf.as_str() == config
                            && s.endpoints.iter().any(|e| &e.ifname == *ifname)
                            && !valid
                                .iter()
                                .any(|(id, i)| *id == c.container_id && i == *ifname)
                    })
                    .map(|(ifname, _)| (c.container_id.clone(), ifname.clone(), s.name.clone()))
            })
            .collect();
        let (mut removed, mut errors) = (vec![], vec![]);
        for (id, ifname, name) in stale {
            match self.cni_del(&id, &ifname).await {
                Ok(_) => removed.push(format!("{name} {ifname} (container {id})")),
                Err(e) => errors.push(format!("{name} {ifname} (container {id}): {e:#}")),
            }
        }
        (removed, errors)
    }
}
