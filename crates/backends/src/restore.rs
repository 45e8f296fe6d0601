//! Snapshots and restores: what a backend implements so that `lab run restore` can start its
//! instances from a snapshot instead of from nothing.
//!
//! A cold start builds everything: a VMM creates a VM, loads a guest and boots it; a container
//! runtime makes namespaces and execs the workload. A *restored* start skips all of that: an
//! earlier instance was started once, stopped at `ready` and saved — a VM's registers and RAM, a
//! container's processes as CRIU dumps them — and each new instance is that saved state put
//! back. The field's microVMs (Firecracker's snapshots, Lambda SnapStart) and container runtimes
//! (`runc checkpoint`/`restore`, Podman's and Docker's checkpoints, all through CRIU) do it.
//!
//! ```text
//!  checkpoint:  start cold ─► workload at `ready` ─► save its state ─► end it   → Snapshot
//!  restore:     Snapshot ─► new instance with that state ─► the restored workload's first
//!               marker (`ready`) ─► its work, `start` … `done`, as any instance
//! ```
//!
//! A backend that can do this returns itself from [`crate::Backend::restorer`] as a [`Restore`].
//! [`Restore::restore_availability`] says, in one line, why it cannot here (CRIU missing or
//! failing its own `criu check`, say): the experiment then skips the backend with that line.
//!
//! # Where a snapshot lives
//!
//! A snapshot is the lab's, and so is what it holds: [`Stored::Unnamed`] is a file opened with
//! `O_TMPFILE` in the lab's 0700 work directory — it never has a name, and the kernel frees it
//! when the last descriptor on it closes, so even a lab killed by SIGKILL leaves nothing.
//! [`Stored::Dir`] (CRIU writes many files; QEMU a stream and its arguments) is a directory
//! under the work directory: removed when the [`Snapshot`] is dropped, and, if the lab is
//! killed, with the rest of its work directory by the next lab (see [`crate::lab`]).

use crate::instance::Instance;
use crate::lab::Lab;
use crate::{Availability, BackendError, Limits, Spec};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How to restore (the options of `lab run restore`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Touch every page of the snapshot's memory before the restored workload runs
    /// (`--prefault`): the restore takes longer, its first run pays no page faults. A backend
    /// that cannot does the restore without and notes `prefault=no`.
    pub prefault: bool,
}

/// Where a snapshot's bytes are (see the [module](self) documentation).
#[derive(Debug)]
pub enum Stored {
    /// One file without a name, open here: a VM's snapshot.
    Unnamed(File),
    /// A directory of files: a checkpoint by CRIU. Removed when the snapshot is dropped.
    Dir(PathBuf),
}

/// A snapshot of one instance of `spec`, taken at its `ready`, ready to be restored any number
/// of times.
#[derive(Debug)]
pub struct Snapshot {
    /// The backend that took it (only it can restore it).
    pub backend: String,
    /// What the snapshotted instance runs: every restored instance runs the same.
    pub spec: Spec,
    /// Where its bytes are.
    pub stored: Stored,
    /// Bytes it holds on the file system (allocated, not apparent: see
    /// [`isolab_results::SnapshotRecord::bytes`]).
    pub bytes: u64,
    /// From the instance held at `ready` to the snapshot complete.
    pub take_ns: u64,
    /// The steps of taking it, with how long each took.
    pub phases: Vec<(String, u64)>,
}

impl Snapshot {
    /// A new unnamed file in the lab's work directory (mode 0700, the lab's own): `O_TMPFILE`,
    /// so no one else can open it, nothing can be planted at its name (it has none), and it
    /// disappears with its last descriptor whatever happens to the lab.
    pub fn unnamed_file(lab: &Lab) -> Result<File, BackendError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .mode(0o600)
            .open(lab.workdir())
            .map_err(BackendError::io(format!(
                "make an unnamed snapshot file in {} (O_TMPFILE)",
                lab.workdir().display()
            )))
    }

    /// A new directory for a snapshot called `name` under the lab's work directory, mode 0700.
    pub fn new_dir(lab: &Lab, name: &str) -> Result<PathBuf, BackendError> {
        let parent = lab.workdir().join("snapshots");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&parent)
            .map_err(BackendError::io(format!("make {}", parent.display())))?;
        let dir = parent.join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(BackendError::io(format!("make {}", dir.display())))?;
        Ok(dir)
    }

    /// The unnamed file, for a backend that stored one.
    pub fn file(&self) -> Option<BorrowedFd<'_>> {
        match &self.stored {
            Stored::Unnamed(f) => Some(f.as_fd()),
            Stored::Dir(_) => None,
        }
    }

    /// The directory, for a backend that stored one.
    pub fn dir(&self) -> Option<&Path> {
        match &self.stored {
            Stored::Dir(d) => Some(d),
            Stored::Unnamed(_) => None,
        }
    }

    /// Say on `instance`, restored from this snapshot, what kind of start it had: `start` =
    /// restored, whether its memory was in place before it ran (`prefaulted`: a restore that
    /// copies every page in first, as CRIU's and QEMU's do, is), and the snapshot's bytes.
    pub fn note_restored(&self, instance: &mut Instance, prefaulted: bool) {
        use isolab_results::info;
        instance.note(info::START, isolab_results::StartKind::Restored.name());
        instance.note(info::PREFAULT, if prefaulted { "yes" } else { "no" });
        instance.note(info::SNAPSHOT_BYTES, self.bytes);
    }

    /// The record a results file keeps of it.
    pub fn record(&self, family: isolab_results::Family) -> isolab_results::SnapshotRecord {
        isolab_results::SnapshotRecord {
            backend: self.backend.clone(),
            family,
            workload: (&self.spec).into(),
            bytes: self.bytes,
            take_ns: self.take_ns,
            phases: self.phases.clone(),
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if let Stored::Dir(dir) = &self.stored {
            // Best effort: what remains goes with the lab's work directory.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bytes a file holds on its file system: its allocated blocks (`st_blocks` counts 512-byte
/// units whatever the file system's block size), so a sparse file counts only what was
/// written.
pub fn allocated_bytes(file: &File) -> Result<u64, BackendError> {
    use std::os::unix::fs::MetadataExt;
    let meta = file
        .metadata()
        .map_err(BackendError::io("stat a snapshot file"))?;
    Ok(meta.blocks() * 512)
}

/// What a backend implements to be restorable (see the [module](self) documentation).
pub trait Restore: Send + Sync {
    /// Whether this backend can checkpoint and restore here now; if not, why, in one line with
    /// what would fix it. It is asked only of a backend that is itself available.
    fn restore_availability(&self, lab: &Lab) -> Availability;

    /// Start one instance of `spec` under `limits` cold, wait for its `ready`, save it as a
    /// [`Snapshot`] and end the instance. The snapshot's phases say what the saving cost.
    fn checkpoint(&self, lab: &Lab, spec: &Spec, limits: &Limits)
        -> Result<Snapshot, BackendError>;

    /// Start one instance from `snapshot` under `limits`. Like [`crate::Backend::start`], it
    /// returns once the instance's processes exist; its timeline starts (`spawn`) when the
    /// restore is asked for, the backend stamps its restore's phases (mapping the memory,
    /// loading the state, first entry; CRIU's own stages), and `ready` is the first marker the
    /// *restored workload* sends — never the restoring tool's own reply. The instance notes
    /// [`isolab_results::info::START`] = `restored`, so its run says what kind of start it was.
    fn restore(
        &self,
        lab: &Lab,
        snapshot: &Snapshot,
        limits: &Limits,
        options: &RestoreOptions,
    ) -> Result<Instance, BackendError>;
}
