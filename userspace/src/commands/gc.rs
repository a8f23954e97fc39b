//! `bpfnet gc`.
use std::process::ExitCode;

use anyhow::Result;
use bpfnet::ops::Controller;

/// Prints what was removed, one line each.
pub fn report(removed: Vec<String>) {
    if removed.is_empty() {
        println!("nothing to remove");
    }
    for r in removed {
        println!("removed {r}");
    }
}

pub async fn run(c: &mut Controller) -> Result<ExitCode> {
    report(c.gc().await?);
    Ok(ExitCode::SUCCESS)
}
