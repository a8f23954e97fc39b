//! `bpfnet datapath load|unload`.
use std::process::ExitCode;

use anyhow::Result;
use bpfnet::{ops::Controller, paths::Paths};
use clap::Subcommand;

use super::indent;

#[derive(Subcommand)]
pub enum DatapathCmd {
    /// Load (or atomically replace) the programs, pin them and their maps,
    /// and bring the kernel in line with the state.
    Load {
        /// Inter-sandbox communication on the default bridge (Docker's --icc).
        #[arg(long)]
        icc: Option<bool>,
    },
    /// Remove everything bpfnet made: sandboxes, links, pins, state.
    Unload,
}

pub async fn run(paths: &Paths, cmd: DatapathCmd) -> Result<ExitCode> {
    match cmd {
        DatapathCmd::Load { icc } => {
            let (report, c) = Controller::load(paths, icc).await?;
            println!("programs (pinned under {}):", paths.progs_dir().display());
            for (name, id) in &report.programs {
                println!("  {name:<12} id {id}");
            }
            println!("filters replaced in place: {}", report.replaced);
            println!("maps (pinned under {}):", paths.maps_dir().display());
            for m in &report.maps {
                println!("  {}", m.file_name().unwrap_or_default().to_string_lossy());
            }
            println!("networks:");
            print!("{}", indent(&super::network::table(&c)));
        }
        DatapathCmd::Unload => super::gc::report(Controller::unload(paths).await?),
    }
    Ok(ExitCode::SUCCESS)
}
