//! `bpfnet demo`: the seed tutorial's walkthrough — busybox1 and busybox2 on
//! the default `bridge`, busybox2 also on `bridge2`, busybox3 on `bridge2` —
//! with the reachability matrix after each step, then a clean-up.
use std::net::Ipv4Addr;

use anyhow::{bail, Result};

use crate::{
    exec,
    ops::{Controller, NetworkCreate, SandboxCreate},
    paths::Paths,
    state::State,
    util::fmt_mac,
};

const SANDBOXES: [&str; 3] = ["busybox1", "busybox2", "busybox3"];

fn pings(state: &State, from: &str, to: Ipv4Addr) -> bool {
    let sb = &state.sandboxes[from];
    let argv: Vec<String> = ["ping", "-c1", "-W1", "-q", &to.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    exec::command(sb, &argv)
        .and_then(|mut c| {
            Ok(c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?)
        })
        .is_ok_and(|s| s.success())
}

fn show(state: &State) {
    for sb in state.sandboxes.values() {
        let addrs: Vec<String> = sb
            .endpoints
            .iter()
            .map(|e| format!("{} {} {} ({})", e.ifname, e.ip, fmt_mac(&e.mac), e.network))
            .collect();
        println!("    {:<9} {}", sb.name, addrs.join(", "));
    }
    let targets: Vec<(String, Ipv4Addr)> = state
        .sandboxes
        .values()
        .flat_map(|s| s.endpoints.iter().map(move |e| (s.name.clone(), e.ip)))
        .collect();
    print!("    {:<9}", "ping →");
    for (name, ip) in &targets {
        print!(" {:>20}", format!("{name}@{ip}"));
    }
    println!();
    for from in state.sandboxes.keys() {
        print!("    {from:<9}");
        for (name, ip) in &targets {
            let cell = if name == from {
                "-"
            } else if pings(state, from, *ip) {
                "ok"
            } else {
                "blocked"
            };
            print!(" {cell:>20}");
        }
        println!();
    }
}

pub async fn run(paths: &Paths) -> Result<()> {
    let mut c = Controller::open(paths).await?;
    for name in SANDBOXES {
        if c.state().sandboxes.contains_key(name) {
            bail!(
                "the demo needs the name {name:?}; remove that sandbox first (`bpfnet rm {name}`)"
            );
        }
    }
    if c.state().networks.contains_key("bridge2") {
        bail!("the demo needs the name \"bridge2\"; remove that network first (`bpfnet network rm bridge2`)");
    }
    let result = steps(&mut c).await;
    println!("\n==> clean up");
    for name in SANDBOXES {
        let _ = c.sandbox_rm(name, true).await;
    }
    let _ = c.network_rm("bridge2").await;
    println!("    removed busybox1..3 and bridge2");
    result
}

async fn steps(c: &mut Controller) -> Result<()> {
    let step = |s: &str| println!("\n==> {s}");
    step("bpfnet network create -d bridge bridge2");
    let net = c
        .network_create(NetworkCreate {
            name: "bridge2".into(),
            driver: Some("bridge".into()),
            ..Default::default()
        })
        .await?;
    println!(
        "    bridge2: subnet {} gateway {}",
        net.subnet.expect("subnet"),
        net.gateway.expect("gateway")
    );
    for (name, net) in [("busybox1", "bridge"), ("busybox2", "bridge")] {
        step(&format!("bpfnet create --name {name} --network {net}"));
        c.sandbox_create(SandboxCreate {
            name: name.into(),
            networks: vec![net.into()],
            ..Default::default()
        })
        .await?;
        show(c.state());
    }
    step("bpfnet network connect bridge2 busybox2");
    c.connect("bridge2", "busybox2", vec![], None, None).await?;
    show(c.state());
    step("bpfnet create --name busybox3 --network bridge2");
    c.sandbox_create(SandboxCreate {
        name: "busybox3".into(),
        networks: vec!["bridge2".into()],
        ..Default::default()
    })
    .await?;
    show(c.state());
    println!("\n    busybox1 and busybox3 share no network: isolated, as in Docker.");
    Ok(())
}
