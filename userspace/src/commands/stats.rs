//! `bpfnet stats` and `bpfnet monitor`.
use std::process::ExitCode;

use anyhow::Result;
use bpfnet::{ops::Controller, stats};

use super::{print_json, Format};

pub async fn run(c: &Controller, sandbox: Option<&str>, format: Format) -> Result<ExitCode> {
    let report = stats::collect(c, sandbox).await?;
    match format {
        Format::Json => print_json(&report.json()),
        Format::Table => print!("{}", report.table()),
    }
    Ok(ExitCode::SUCCESS)
}
