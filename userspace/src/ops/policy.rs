//! `policy add`/`import` and `policy rm`. A rule change has no kernel step of
//! its own: the rule set is derived from the state and swapped in atomically
//! at commit; recovery after a crash recompiles it from the committed state.
use anyhow::{anyhow, bail, Result};
use bpfnet_common::MAX_RULES;

use super::{journal::Recovery, Controller, Plan};
use crate::{
    policy::{self, Action, Rule, Traffic},
    util::ip_key,
};

impl Controller {
    async fn execute_rules(&mut self, what: String, target: crate::state::State) -> Result<()> {
        self.execute(Plan {
            what,
            recovery: Recovery::RollBack,
            steps: vec![],
            target,
            networks: vec![],
            sandbox: None,
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
        self.host.dp.reset_rule_hits(&ids)?;
        self.execute_rules(format!("policy add {ids:?}"), target)
            .await?;
        // A deny applies to established connections too: forget them, so
        // their next packet is judged anew.
        let state = self.state();
        let ips = |sel: &str| -> Vec<u32> {
            policy::endpoints(state, sel)
                .iter()
                .map(|e| ip_key(e.ip))
                .collect()
        };
        let denied: Vec<(Vec<u32>, Vec<u32>, Traffic)> = rules
            .iter()
            .filter(|r| r.3 == Action::Deny)
            .map(|(from, to, traffic, _)| (ips(from), ips(to), *traffic))
            .collect();
        if !denied.is_empty() {
            self.host.dp.flush_conntrack(|k, _| {
                denied.iter().any(|(src, dst, traffic)| {
                    src.contains(&k.src_ip)
                        && dst.contains(&k.dst_ip)
                        && traffic.covers(k.proto, k.dport)
                })
            })?;
        }
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
        let removed: Vec<Rule> = numbers
            .iter()
            .filter_map(|n| target.policies.remove(n))
            .collect();
        self.execute_rules(format!("policy rm {numbers:?}"), target)
            .await?;
        let allowed: Vec<u32> = removed
            .iter()
            .filter(|r| r.action == Action::Allow)
            .map(|r| r.id)
            .collect();
        if !allowed.is_empty() {
            self.host
                .dp
                .flush_conntrack(|_, v| allowed.contains(&v.rule))?;
        }
        Ok(())
    }
}
