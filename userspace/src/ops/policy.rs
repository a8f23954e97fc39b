//! `policy add`/`import` and `policy rm`. A rule change has no kernel step of
//! its own: the rule set is derived from the state and swapped in atomically
//! at commit; recovery after a crash recompiles it from the committed state.
use anyhow::{anyhow, bail, Result};
use bpfnet_common::MAX_RULES;

use super::{
    journal::{AfterCommit, Recovery},
    Controller, Plan,
};
use crate::{
    policy::{self, Action, Rule, Traffic},
    state::State,
    util::ip_key,
};

impl Controller {
    async fn execute_rules(
        &mut self,
        what: String,
        target: State,
        after: Vec<AfterCommit>,
    ) -> Result<()> {
        self.execute(Plan {
            what,
            recovery: Recovery::RollBack,
            steps: vec![],
            target,
            networks: vec![],
            sandbox: None,
            after,
        })
        .await
    }

    /// `bpfnet policy add` and `import`: adds rules in one step (one
    /// compile, one swap of the datapath's rule set); returns their ids.
    pub async fn policy_add(
        &mut self,
        rules: Vec<(String, String, Traffic, Action)>,
    ) -> Result<Vec<u32>> {
        policy::check_rules(self.state(), &rules)?;
        let ids: Vec<u32> = (1..MAX_RULES)
            .filter(|id| !self.state().policies.contains_key(id))
            .take(rules.len())
            .collect();
        if ids.len() < rules.len() {
            bail!(
                "the policy would hold more than {} rules, the most it can; remove some first",
                MAX_RULES - 1
            );
        }
        let mut target = self.state().clone();
        for ((from, to, traffic, action), id) in rules.iter().zip(&ids) {
            let rule = Rule {
                id: *id,
                from: from.clone(),
                to: to.clone(),
                traffic: *traffic,
                action: *action,
            };
            target.policies.insert(*id, rule);
        }
        let denies: Vec<u32> = rules
            .iter()
            .zip(&ids)
            .filter(|(r, _)| r.3 == Action::Deny)
            .map(|(_, id)| *id)
            .collect();
        let after = if denies.is_empty() {
            vec![]
        } else {
            vec![AfterCommit::ForgetDenied { rules: denies }]
        };
        self.host.dp.reset_rule_hits(&ids)?;
        self.execute_rules(format!("policy add {ids:?}"), target, after)
            .await?;
        Ok(ids)
    }

    /// `bpfnet policy rm`: all listed rules go in one step, or none (an
    /// unknown ID changes nothing). Connections they allowed end with them.
    pub async fn policy_rm(&mut self, ids: &[String]) -> Result<()> {
        let mut numbers = vec![];
        for id in ids {
            let n: u32 = id.parse().map_err(|_| {
                anyhow!("invalid rule ID {id:?}: IDs are numbers, see `bpfnet policy ls`")
            })?;
            if !self.state().policies.contains_key(&n) {
                bail!("rule {n} not found; list rules with `bpfnet policy ls`");
            }
            numbers.push(n);
        }
        let mut target = self.state().clone();
        let allows: Vec<u32> = numbers
            .iter()
            .filter_map(|n| target.policies.remove(n))
            .filter(|r| r.action == Action::Allow)
            .map(|r| r.id)
            .collect();
        let after = if allows.is_empty() {
            vec![]
        } else {
            vec![AfterCommit::ForgetAllowedBy { rules: allows }]
        };
        self.execute_rules(format!("policy rm {numbers:?}"), target, after)
            .await
    }

    /// Runs what follows a commit; idempotent (recovery may run it again).
    pub(super) fn after_commit(&self, after: &AfterCommit) -> Result<()> {
        match after {
            AfterCommit::ForgetDenied { rules } => {
                // A deny applies to established connections too: forget
                // them, so their next packet is judged anew.
                let state = self.state();
                // IPv6 connections are tracked under the endpoints' slots.
                let ips = |sel: &str| -> Vec<u32> {
                    policy::endpoints(state, sel)
                        .iter()
                        .flat_map(|e| [ip_key(e.ip), crate::util::slot_key(e.slot)])
                        .collect()
                };
                let denied: Vec<(Vec<u32>, Vec<u32>, Traffic)> = rules
                    .iter()
                    .filter_map(|id| state.policies.get(id))
                    .map(|r| (ips(&r.from), ips(&r.to), r.traffic))
                    .collect();
                self.host.dp.flush_conntrack(|k, _| {
                    denied.iter().any(|(src, dst, traffic)| {
                        src.contains(&k.src_ip)
                            && dst.contains(&k.dst_ip)
                            && traffic.covers(k.proto, k.dport)
                    })
                })?;
            }
            AfterCommit::ForgetAllowedBy { rules } => {
                self.host
                    .dp
                    .flush_conntrack(|_, v| rules.contains(&v.rule))?;
            }
        }
        Ok(())
    }
}
