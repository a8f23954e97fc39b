//! The `bpfnet` commands, one file per verb family (netavark's shape): each
//! parses its arguments, calls the library ([`bpfnet::ops`]) and prints.
//! Decisions belong to the library, so that other front ends share them.
pub mod datapath;
pub mod gc;
pub mod network;
pub mod policy;
pub mod sandbox;
pub mod stats;

use std::process::ExitCode;

use anyhow::Result;
use bpfnet::ops::Controller;
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}

pub fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

/// Runs `f` for each name; reports each failure, fails if any did.
pub async fn each<'a>(
    c: &mut Controller,
    names: &'a [String],
    mut f: impl AsyncFnMut(&mut Controller, &'a str) -> Result<()>,
) -> Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    for name in names {
        match f(c, name).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}
