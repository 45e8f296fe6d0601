//! The lab's own **trace instance**: the kernel's tracepoints, recorded into a buffer nobody else
//! writes to, for the processes of the lab alone.
//!
//! tracefs is the kernel's window on its static tracepoints (`sched:sched_process_exec`,
//! `syscalls:sys_enter_pivot_root`, `kvm:kvm_entry`, ...). Its top-level directory is one ring
//! buffer for the whole machine, shared by every user of `trace-cmd` or `perf` — and by other labs.
//! So a lab never touches it: it makes a directory under `instances/`, and the kernel gives that
//! directory a ring buffer, event switches, filters and a clock of its own. Its name carries the
//! lab's id (`instances/isolab-<id>`), it is written into the ledger before it is made, and it is
//! removed with `rmdir` when the lab ends — by the lab, by its guardian after a SIGKILL, or by the
//! next lab ([`crate::ownership`]).
//!
//! Three settings make the recording fit the lab:
//! * `trace_clock` = `mono`: every event is stamped with `CLOCK_MONOTONIC`, the clock the lab's
//!   own phases use, so the kernel's events and the lab's markers sit on one time line;
//! * `set_event_pid` + `options/event-fork`: the kernel records only events of the listed tasks,
//!   and adds a task's children to the list when it forks. Listing the lab's own threads (and,
//!   for Docker, the daemons') follows everything the lab starts, however deep, and nothing else;
//! * filters: `sys_enter_ioctl` only for KVM's requests (type byte 0xAE), not every ioctl.
//!
//! tracefs is mounted where the host has it (`/sys/kernel/tracing`); where nothing is mounted the
//! lab mounts it in its own work directory (all mounts of tracefs show the same kernel state, so
//! this is a view, not a copy), and that mount goes with the work directory.

use crate::ownership::{Ledger, Owned, OwnershipError, Resource};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// tracefs cannot be used here; the text says why (not root, locked down, not built in).
    #[error("kernel tracing is unavailable: {0}")]
    Unavailable(String),
    /// A tracefs file could not be written or read.
    #[error("tracefs {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The lab could not write the instance into its ledger.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
}

/// The mount point of a tracefs in this mount namespace, if any: the host's usual places first,
/// then any other (`/proc/self/mountinfo`, field 5 is the mount point, after ` - ` the type).
pub fn find_mount() -> Option<PathBuf> {
    let text = crate::cgroup::read_mountinfo();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("tracefs "))
        })
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(crate::cgroup::unescape_mount(p)))
        .filter(|p| p.join("instances").is_dir())
        .collect();
    found.sort_by_key(|p| {
        (
            p != Path::new("/sys/kernel/tracing"),
            p != Path::new("/sys/kernel/debug/tracing"),
        )
    });
    found.into_iter().next()
}

/// Mount tracefs at `dir` (made if missing).
fn mount_at(dir: &Path) -> Result<(), TraceError> {
    fs::create_dir_all(dir).map_err(|source| TraceError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    nix::mount::mount(
        Some("tracefs"),
        dir,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| {
        TraceError::Unavailable(format!(
            "mount tracefs at {}: {e} (needs root, and a kernel with CONFIG_FTRACE that is not \
             locked down)",
            dir.display()
        ))
    })
}

/// The name of lab `id`'s instance.
pub fn instance_name(id: &str) -> String {
    format!("isolab-{id}")
}

/// Remove the instance `name` (the [`Resource::TraceInstance`] undo). Uses a mounted tracefs, or
/// mounts one for the moment in a fresh private directory.
pub(crate) fn remove_instance(name: &str) -> Result<Vec<String>, String> {
    let (root, temporary) = match find_mount() {
        Some(root) => (root, None),
        None => {
            let dir = std::env::temp_dir().join(format!("{name}-tracefs-{}", std::process::id()));
            if let Err(e) = mount_at(&dir) {
                let _ = fs::remove_dir(&dir);
                return Err(e.to_string());
            }
            (dir.clone(), Some(dir))
        }
    };
    let dir = root.join("instances").join(name);
    let result = if dir.is_dir() {
        // Stop recording first: a buffer still being written to is freed all the same, but
        // a reader holding `trace_pipe` open would make the rmdir fail with EBUSY.
        let _ = fs::write(dir.join("tracing_on"), "0");
        fs::remove_dir(&dir)
            .map(|()| vec![format!("removed trace instance {name}")])
            .map_err(|e| format!("rmdir {}: {e}", dir.display()))
    } else {
        Ok(Vec::new())
    };
    if let Some(t) = temporary {
        let _ = nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&t);
    }
    result
}

/// The lab's trace instance, removed when dropped.
#[derive(Debug)]
pub struct Instance {
    dir: PathBuf,
    /// The ledger's claim: dropping it removes the instance.
    owned: Option<Owned>,
}

impl Instance {
    /// Make the lab's instance, mounting tracefs at `private_mount` if the host has none mounted.
    pub fn open(ledger: &Arc<Ledger>, private_mount: &Path) -> Result<Instance, TraceError> {
        let root = match find_mount() {
            Some(root) => root,
            None => {
                mount_at(private_mount)?;
                private_mount.to_path_buf()
            }
        };
        let name = instance_name(ledger.id());
        let owned = ledger.claim(Resource::TraceInstance { name: name.clone() })?;
        let dir = root.join("instances").join(&name);
        if let Err(e) = fs::create_dir(&dir) {
            owned.unmade();
            return Err(TraceError::Unavailable(format!(
                "make the trace instance {}: {e}",
                dir.display()
            )));
        }
        let instance = Instance {
            dir,
            owned: Some(owned),
        };
        instance.write("tracing_on", "0")?;
        // The events' timestamps on CLOCK_MONOTONIC, like every phase the lab records.
        instance.write("trace_clock", "mono")?;
        instance.write("options/event-fork", "1")?;
        Ok(instance)
    }

    /// The instance's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write `value` to the instance's file `file`.
    pub fn write(&self, file: &str, value: &str) -> Result<(), TraceError> {
        let path = self.dir.join(file);
        // One write(2) per value: tracefs parses each write on its own.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| TraceError::Io { path, source })
    }

    /// Record `event` (`"sched/sched_process_exec"`), only when `filter` holds if one is given.
    pub fn enable(&self, event: &str, filter: Option<&str>) -> Result<(), TraceError> {
        if let Some(f) = filter {
            self.write(&format!("events/{event}/filter"), f)?;
        }
        self.write(&format!("events/{event}/enable"), "1")
    }

    /// Per-CPU ring buffer size.
    pub fn buffer_kib(&self, kib: u32) -> Result<(), TraceError> {
        self.write("buffer_size_kb", &kib.to_string())
    }

    /// Empty the buffer, record only `tasks` and what they fork from now on, and start.
    pub fn start(&self, tasks: &[u32]) -> Result<(), TraceError> {
        self.write("tracing_on", "0")?;
        self.write("trace", "")?;
        let list: Vec<String> = tasks.iter().map(u32::to_string).collect();
        // Truncating write: the list replaces the last sample's (its pids may be reused).
        self.write("set_event_pid", &list.join(" "))?;
        self.write("tracing_on", "1")
    }

    /// Stop recording and return the buffer as text (the `trace` file: one line per event,
    /// `comm-pid [cpu] flags seconds.micros: event: fields`).
    pub fn stop(&self) -> Result<String, TraceError> {
        self.write("tracing_on", "0")?;
        let path = self.dir.join("trace");
        fs::read_to_string(&path).map_err(|source| TraceError::Io { path, source })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        if let Some(owned) = self.owned.take() {
            let _ = owned.release();
        }
    }
}

/// The tasks (threads) of this process, for [`Instance::start`].
pub fn own_tasks() -> Vec<u32> {
    isolab_host::procfs::numbered("/proc/self/task")
        .into_iter()
        .map(|tid| tid as u32)
        .collect()
}
