//! `bpfnet policy add|import|ls|rm`.
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use bpfnet::{
    inspect,
    ops::Controller,
    policy::{Action, Traffic},
};
use clap::{Subcommand, ValueEnum};

use super::{print_json, Format};

#[derive(Clone, Copy, ValueEnum)]
pub enum PolicyAction {
    Allow,
    Deny,
}

#[derive(Subcommand)]
pub enum PolicyCmd {
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
        /// ICMP echo (ping); as a deny, all ICMP.
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

fn action_name(a: Action) -> &'static str {
    if a == Action::Allow {
        "allow"
    } else {
        "deny"
    }
}

pub async fn run(c: &mut Controller, cmd: PolicyCmd) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::Add {
            from,
            to,
            port,
            icmp,
            action,
        } => {
            let traffic = match (port, icmp) {
                (Some(p), _) => Traffic::parse_port(&p)?,
                (None, true) => Traffic::Icmp,
                (None, false) => Traffic::Any,
            };
            let action = match action {
                PolicyAction::Allow => Action::Allow,
                PolicyAction::Deny => Action::Deny,
            };
            let ids = c.policy_add(vec![(from, to, traffic, action)]).await?;
            println!("{}", ids[0]);
        }
        PolicyCmd::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow!("reading {}: {e}", file.display()))?;
            let rules = bpfnet::policy::parse_import(&text)
                .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
            let n = rules.len();
            let ids = c
                .policy_add(rules)
                .await
                .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
            println!(
                "added {n} rules (IDs {}..={})",
                ids.first().unwrap_or(&0),
                ids.last().unwrap_or(&0)
            );
        }
        PolicyCmd::Ls { format } => {
            let mut rows = vec![];
            for r in c.state().policies.values() {
                let hits = c.datapath().rule_hits(r.id)?;
                rows.push((r.clone(), hits));
            }
            match format {
                Format::Json => print_json(&serde_json::Value::Array(
                    rows.iter()
                        .map(|(r, hits)| {
                            serde_json::json!({
                                "ID": r.id, "From": r.from, "To": r.to,
                                "Port": r.traffic.display(), "Action": action_name(r.action), "Hits": hits,
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
                                action_name(r.action).to_string(),
                                hits.to_string(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        inspect::table(&["ID", "FROM", "TO", "PORT", "ACTION", "HITS"], &rows)
                    );
                }
            }
        }
        PolicyCmd::Rm { ids } => {
            c.policy_rm(&ids).await?;
            for id in ids {
                println!("{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
