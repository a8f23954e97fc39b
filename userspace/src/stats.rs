//! `bpfnet stats` and `bpfnet monitor`: what the datapath counted and dropped.
use std::collections::BTreeMap;

use anyhow::Result;
use bpfnet_common::{hook, DropReason, EndpointCounters, CT_QUOTA};
use serde_json::{json, Value};

use crate::{
    datapath::Datapath,
    inspect::table,
    ops::Controller,
    paths::Paths,
    state::DriverKind,
    store::snapshot,
    util::{fmt_mac, ip_from_key, now_rfc3339},
};

pub struct EndpointStats {
    pub sandbox: String,
    pub network: String,
    pub interface: String,
    pub counters: EndpointCounters,
    /// Conntrack entries it opened that are still in the table.
    pub conntrack: u64,
}

pub struct Report {
    pub endpoints: Vec<EndpointStats>,
    pub drops: Vec<(DropReason, u64)>,
}

/// Counters of every eBPF endpoint (or of one sandbox's) and drops by reason.
pub async fn collect(c: &Controller, sandbox: Option<&str>) -> Result<Report> {
    let state = c.state();
    if let Some(name) = sandbox {
        if !state.sandboxes.contains_key(name) {
            anyhow::bail!("sandbox {name:?} not found; list sandboxes with `bpfnet ps`");
        }
    }
    let mut endpoints = vec![];
    for (sb, ep) in state.endpoints() {
        if sandbox.is_some_and(|n| n != sb.name)
            || state.networks[&ep.network].driver != DriverKind::Bridge
        {
            continue;
        }
        endpoints.push(EndpointStats {
            sandbox: sb.name.clone(),
            network: ep.network.clone(),
            interface: ep.ifname.clone(),
            counters: c.datapath().counters(ep.slot)?,
            conntrack: c.datapath().conntrack_use(ep.slot)?,
        });
    }
    Ok(Report {
        endpoints,
        drops: c.datapath().drop_counters()?,
    })
}

impl Report {
    pub fn json(&self) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|e| {
                let c = &e.counters;
                json!({
                    "sandbox": e.sandbox, "network": e.network, "interface": e.interface,
                    "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                    "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes,
                    "forwarded": c.forwarded, "to_host": c.to_host, "dropped": c.dropped,
                    "conntrack": e.conntrack, "conntrack_quota": CT_QUOTA,
                })
            })
            .collect();
        let drops: BTreeMap<&str, u64> = self.drops.iter().map(|(r, n)| (r.name(), *n)).collect();
        json!({ "endpoints": endpoints, "drops": drops })
    }

    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .endpoints
            .iter()
            .map(|e| {
                let c = &e.counters;
                vec![
                    e.sandbox.clone(),
                    e.network.clone(),
                    e.interface.clone(),
                    c.rx_packets.to_string(),
                    c.rx_bytes.to_string(),
                    c.tx_packets.to_string(),
                    c.tx_bytes.to_string(),
                    c.forwarded.to_string(),
                    c.to_host.to_string(),
                    c.dropped.to_string(),
                    format!("{}/{CT_QUOTA}", e.conntrack),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "SANDBOX",
                "NETWORK",
                "IF",
                "RX PKTS",
                "RX BYTES",
                "TX PKTS",
                "TX BYTES",
                "FORWARDED",
                "TO HOST",
                "DROPPED",
                "CONNTRACK",
            ],
            &rows,
        );
        let drops: Vec<Vec<String>> = self
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| vec![r.name().to_string(), n.to_string()])
            .collect();
        out.push('\n');
        out.push_str(&table(&["DROP REASON", "PACKETS"], &drops));
        out
    }
}

/// Which sandbox interface a host-side ifindex belongs to.
fn endpoint_name(paths: &Paths, ifindex: u32) -> String {
    let Ok(ifname) = nix::net::if_::if_indextoname(ifindex) else {
        return format!("ifindex {ifindex}");
    };
    let ifname = ifname.to_string_lossy().into_owned();
    snapshot(paths)
        .ok()
        .and_then(|state| {
            let (sb, ep) = state.endpoints().find(|(_, e)| e.host_ifname == ifname)?;
            Some(format!("{}/{} ({})", sb.name, ep.ifname, ep.network))
        })
        .unwrap_or(ifname)
}

/// Prints one line per dropped packet until interrupted, like `cilium monitor`,
/// each starting with the time it was read (RFC 3339, UTC): only drops that
/// happen after it starts. Holds no lock: other commands go on while it runs.
pub async fn monitor(paths: &Paths) -> Result<()> {
    let dp = Datapath::open_or_load(paths)?;
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let skipped = |n: usize| {
        if n > 0 {
            eprintln!("(skipped {n} drop event(s) recorded before monitor started)");
        }
        eprintln!("Listening for dropped packets. Press Ctrl-C to quit.");
    };
    dp.watch_drops(skipped, |ev| {
        let who = names
            .entry(ev.ifindex)
            .or_insert_with(|| endpoint_name(paths, ev.ifindex));
        let reason = DropReason::from_u32(ev.reason).map_or("unknown", |r| r.name());
        let dir = if ev.hook == hook::INGRESS {
            "from"
        } else {
            "to"
        };
        let what = match ev.ethertype {
            0x0800 => format!(
                "{} -> {} proto {}",
                ip_from_key(ev.src_ip),
                ip_from_key(ev.dst_ip),
                ev.ip_proto
            ),
            0x0806 => format!(
                "ARP sender {} target {}",
                ip_from_key(ev.src_ip),
                ip_from_key(ev.dst_ip)
            ),
            // IPv6 events carry the next header; the MACs name the ends.
            0x86dd => format!("IPv6 next header {}", ev.ip_proto),
            t => format!("ethertype 0x{t:04x}"),
        };
        let rule = if ev.rule != 0 {
            format!(" by rule {}", ev.rule)
        } else {
            String::new()
        };
        println!(
            "{} drop ({reason}{rule}) {dir} {who}: {what}, {} -> {}",
            now_rfc3339(),
            fmt_mac(&ev.src_mac),
            fmt_mac(&ev.dst_mac)
        );
        true
    })
    .await
}
