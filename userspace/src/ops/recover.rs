//! Recovery: what the next lock holder (every mutating command, and
//! `bpfnet gc`) does with the journal of an operation whose process died —
//! nothing but clearing it if it committed (after running again what
//! follows a commit), undoing every step if it added, running it again to
//! its end if it removed. Only what the journal proves is the dead
//! operation's own is touched.
use anyhow::Result;

use super::{
    journal::{self, Recovery, Redo},
    Controller,
};

impl Controller {
    /// Deals with the journal of an operation a crash interrupted: done if it
    /// committed, undone if it added, completed if it removed. Returns what
    /// it did, for gc's report.
    pub async fn recover(&mut self) -> Result<Option<String>> {
        let Some((intent, notes)) = journal::read(&self.paths)? else {
            return Ok(None);
        };
        if self.state().last_op.as_deref() == Some(intent.id.as_str()) {
            for a in &intent.after {
                self.after_commit(a)?;
            }
            journal::clear(&self.paths)?;
            return Ok(Some(format!(
                "journal of `{}` (it had committed)",
                intent.what
            )));
        }
        let mut steps = intent.steps.clone();
        for note in &notes {
            if let Some(step) = steps.get_mut(note.step) {
                step.apply_note(note);
            }
        }
        match &intent.recovery {
            Recovery::RollBack => {
                let live = self.state().clone();
                let mut errors = vec![];
                for step in steps.iter().rev() {
                    if let Err(e) = self.undo(step, &live).await {
                        errors.push(format!("{e:#}"));
                    }
                }
                let networks: Vec<String> = self.state().networks.keys().cloned().collect();
                if let Err(e) = self.resync(&networks).await {
                    errors.push(format!("{e:#}"));
                }
                if !errors.is_empty() {
                    anyhow::bail!(
                        "rolling back `{}`, interrupted by a crash, failed: {}; fix that and run `bpfnet gc`",
                        intent.what,
                        errors.join("; ")
                    );
                }
                journal::clear(&self.paths)?;
                Ok(Some(format!("`{}`, interrupted: rolled back", intent.what)))
            }
            Recovery::Complete(redo) => {
                journal::clear(&self.paths)?;
                self.redo(redo).await?;
                Ok(Some(format!("`{}`, interrupted: completed", intent.what)))
            }
        }
    }

    async fn redo(&mut self, redo: &Redo) -> Result<()> {
        match redo {
            Redo::SandboxRm { name } => {
                if self.state().sandboxes.contains_key(name) {
                    self.sandbox_rm(name, true).await?;
                }
            }
            Redo::SandboxesRm { names } => self.sandboxes_rm(names).await?,
            Redo::Disconnect { network, sandbox } => {
                let connected = self
                    .state()
                    .sandboxes
                    .get(sandbox)
                    .is_some_and(|s| s.endpoints.iter().any(|e| &e.network == network));
                if connected {
                    self.disconnect(network, sandbox).await?;
                }
            }
            Redo::NetworkRm { name } => {
                if self.state().networks.contains_key(name) {
                    self.network_rm(name).await?;
                }
            }
            Redo::Load => {
                self.reload(None).await?;
            }
        }
        Ok(())
    }
}
