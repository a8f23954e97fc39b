//! The intent journal (write-ahead). Before an operation touches the kernel,
//! its whole plan is written to `BPFNET_ROOT/journal` and made durable: every
//! step with the identity that will prove ownership (the namespace's name,
//! the endpoint's unique veth name and id). While a step runs, what the
//! kernel hands back (the new namespace's inode, the veth's ifindex) is
//! appended as a note before it becomes visible. The operation ends by
//! saving the state with its id (`State::last_op`) and removing the journal.
//!
//! Operations hold the state lock from start to end, so a journal found by
//! the next lock holder belongs to a process that died. Recovery (see
//! `ops::recover`) then either finds its id in the state (it committed: only
//! the journal is left), rolls it back (additive operations: every step is
//! undone, idempotently, touching only what the journal proves is its own),
//! or completes it (removals: run again to the end).
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{ops::step::Step, paths::Paths};

/// What recovery does with an operation that did not commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovery {
    /// Undo every step, newest first (operations that add).
    RollBack,
    /// Run the operation again to its end (operations that remove).
    Complete(Redo),
}

/// A removal that recovery completes by running it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Redo {
    SandboxRm {
        name: String,
    },
    /// Several sandboxes in one operation (`datapath unload`).
    SandboxesRm {
        names: Vec<String>,
    },
    Disconnect {
        network: String,
        sandbox: String,
    },
    NetworkRm {
        name: String,
    },
    Load,
}

/// Work that follows a commit and must not be lost to a crash right after
/// it: recovery of a committed operation runs it again (it is idempotent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterCommit {
    /// New deny rules apply to established connections too: their conntrack
    /// entries are forgotten, so their next packet is judged anew.
    ForgetDenied { rules: Vec<u32> },
    /// Removed allow rules end the connections they allowed.
    ForgetAllowedBy { rules: Vec<u32> },
}

/// The journal's first record: the whole plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Intent {
    /// Unique per operation; the state saved at commit carries it.
    pub id: String,
    /// For people reading the journal or gc's report: `create busybox1`.
    pub what: String,
    pub recovery: Recovery,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<AfterCommit>,
}

/// An identity the kernel handed back while step `step` ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub step: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
}

pub struct Journal {
    file: File,
    path: PathBuf,
}

pub fn path(paths: &Paths) -> PathBuf {
    paths.state_dir.join("journal")
}

impl Journal {
    /// Writes the intent; nothing has been touched yet. Not fsynced: the
    /// journal is for this process dying (the page cache outlives it), and
    /// what it describes (namespaces, links, map entries, the NAT table)
    /// does not outlive the kernel either, so a power loss leaves nothing
    /// for it to undo but, at worst, a sandbox's `/etc/netns/NAME` files,
    /// marked as bpfnet's. Its cost was two disk flushes per command.
    pub fn begin(paths: &Paths, intent: &Intent) -> Result<Journal> {
        let path = path(paths);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut line = serde_json::to_vec(intent)?;
        line.push(b'\n');
        file.write_all(&line)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Journal { file, path })
    }

    /// Appends a note. Written before the identity becomes visible, so a
    /// crash of this process cannot lose it (the page cache outlives it; a
    /// power loss takes the namespaces and links with it).
    pub fn note(&mut self, note: &Note) -> Result<()> {
        let mut line = serde_json::to_vec(note)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// The operation is over (committed, or rolled back).
    pub fn end(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }
}

/// The journal left by an operation that did not end, with its notes. A
/// torn last line (the crash hit a write) is ignored; an unreadable intent
/// means the crash hit before it was written, so nothing was touched.
pub fn read(paths: &Paths) -> Result<Option<(Intent, Vec<Note>)>> {
    let path = path(paths);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut lines = text.lines();
    let Some(intent) = lines
        .next()
        .and_then(|l| serde_json::from_str::<Intent>(l).ok())
    else {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        return Ok(None);
    };
    let notes = lines.filter_map(|l| serde_json::from_str(l).ok()).collect();
    Ok(Some((intent, notes)))
}

/// Removes a journal that recovery has dealt with.
pub fn clear(paths: &Paths) -> Result<()> {
    let path = path(paths);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
