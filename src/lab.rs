//! The lab's own state on the host while it runs: a work directory and the cgroup hierarchy.
//!
//! Everything a lab run creates on the host lives under one of two roots, and both are removed
//! when the [`Lab`] is dropped:
//!
//! * the **work directory** `$TMPDIR/isolab-<pid>-<n>/`, holding the workload executable (written
//!   once from the copy embedded in `lab`), the empty directory on which each container mounts its
//!   private root file system, and the scratch directory of the `io` kernel;
//! * the **cgroups** `<base>/isolab/<pid>-<n>`, one per instance (see [`crate::cgroup`]).
//!
//! A lab killed with SIGKILL cannot clean up; the next [`Lab::new`] removes what dead labs left
//! (their PID is in the names).

use crate::backend::container::profile::{Profile, Security};
use crate::backend::container::seccomp::SeccompError;
use crate::cgroup::{CgroupError, Hierarchy};
use crate::workload::WORKLOAD_ELF;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The work directory could not be made.
    #[error("cannot prepare the work directory {path}: {source}")]
    Workdir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Host-side state shared by every instance of one lab run.
#[derive(Debug)]
pub struct Lab {
    workdir: PathBuf,
    cgroups: Result<Hierarchy, String>,
    /// How long to wait for an instance to reach a marker before giving up on it.
    pub timeout: Duration,
    /// The kernel Linux guests boot (`--kernel`); `None`: find one (see
    /// [`crate::linux_guest::kernel::find`]).
    pub guest_kernel: Option<PathBuf>,
    /// Run backends named on the command line even where they are unavailable (`--force`), to
    /// see how far they get.
    pub force: bool,
    /// How containers (isolab's, and the OCI bundles it writes) are configured beyond their
    /// namespaces (`--profile`).
    pub profile: Profile,
    /// The seccomp profile Docker's configuration loads (Podman's copy of Docker's default).
    pub seccomp_profile: PathBuf,
    /// The profile compiled, and the containers' launcher: made on first use, kept for the
    /// lab's life (see [`Lab::security`]).
    security: OnceLock<Result<Arc<Security>, String>>,
}

impl Lab {
    /// A lab with its work directory under `$TMPDIR` (or /tmp).
    pub fn new() -> Result<Lab, LabError> {
        Lab::in_dir(&std::env::temp_dir())
    }

    /// A lab with its work directory under `parent`.
    pub fn in_dir(parent: &Path) -> Result<Lab, LabError> {
        sweep_stale_workdirs(parent);
        let workdir = make_workdir(parent)?;
        let cgroups = Hierarchy::detect().map_err(|e| e.to_string());
        if let Ok(h) = &cgroups {
            h.sweep_stale();
        }
        Ok(Lab {
            workdir,
            cgroups,
            timeout: Duration::from_secs(120),
            guest_kernel: None,
            force: false,
            profile: Profile::default(),
            seccomp_profile: PathBuf::from(crate::backend::container::seccomp::DEFAULT_PROFILE),
            security: OnceLock::new(),
        })
    }

    /// Use `hierarchy` for instance cgroups instead of the detected one (tests use this to drive
    /// the cgroup v2 code on a v1 machine).
    pub fn with_cgroups(mut self, hierarchy: Hierarchy) -> Lab {
        self.cgroups = Ok(hierarchy);
        self
    }

    /// The work directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The workload executable on the host.
    pub fn workload_path(&self) -> PathBuf {
        self.workdir.join("isolab-workload")
    }

    /// The directory each container mounts its private root file system on. All containers use
    /// the same one: each mounts in its own mount namespace, so they never see each other's.
    pub fn rootfs_mount_point(&self) -> PathBuf {
        self.workdir.join("root")
    }

    /// Where the `io` kernel writes, in every backend (bind-mounted into containers).
    pub fn scratch_dir(&self) -> PathBuf {
        self.workdir.join("scratch")
    }

    /// The cgroup hierarchy, or why there is none.
    pub fn cgroups(&self) -> Result<&Hierarchy, CgroupError> {
        self.cgroups.as_ref().map_err(|_| CgroupError::NotMounted)
    }

    /// Why cgroups are unusable, if they are.
    pub fn cgroup_problem(&self) -> Option<&str> {
        self.cgroups.as_ref().err().map(String::as_str)
    }

    /// The containers' configuration of [`Lab::profile`], compiled on first use (libseccomp
    /// takes milliseconds: once per lab, never per instance). Set the profile before the first
    /// container starts; later changes are not seen.
    /// The error says why the profile cannot be used, and how to fix it.
    pub fn security(&self) -> Result<Arc<Security>, String> {
        self.security
            .get_or_init(|| {
                Security::prepare(self.profile, &self.seccomp_profile)
                    .map(Arc::new)
                    .map_err(|e: SeccompError| e.to_string())
            })
            .clone()
    }

    /// True once [`Lab::security`] has been prepared (successfully or not).
    pub fn security_ready(&self) -> bool {
        self.security.get().is_some()
    }

    /// A name unique on this host for the next instance: `<lab pid>-<n>`. The counter is one
    /// per process, not per `Lab`, so two labs alive in one process (tests do that) never
    /// produce the same cgroup name.
    pub fn next_instance_name(&self) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

fn make_workdir(parent: &Path) -> Result<PathBuf, LabError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = parent.join(format!("isolab-{}-{n}", std::process::id()));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LabError::Workdir { path, source }
    };
    fs::create_dir(&dir).map_err(err(&dir))?;
    let made = (|| {
        // 0755 all the way: a container in a user namespace runs as the invoking user's uid and
        // must be able to reach and execute the workload.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let exe = dir.join("isolab-workload");
        fs::write(&exe, WORKLOAD_ELF)?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
        fs::create_dir(dir.join("root"))?;
        fs::create_dir(dir.join("scratch"))?;
        fs::set_permissions(dir.join("scratch"), fs::Permissions::from_mode(0o1777))?;
        Ok(())
    })();
    match made {
        Ok(()) => Ok(dir),
        Err(source) => {
            let _ = fs::remove_dir_all(&dir);
            Err(LabError::Workdir { path: dir, source })
        }
    }
}

/// Remove `isolab-<pid>-<n>` directories of labs that are no longer running.
fn sweep_stale_workdirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("isolab-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if !crate::host::pid_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
