//! The lab's own state on the host while it runs: its id, a work directory and its cgroups.
//!
//! Everything a lab run creates on the host carries the lab's **id** (random, unique across PID
//! namespaces; see [`isolab_resources::ownership`]) in its name, is written into the lab's ledger before it
//! is made, and is removed when the [`Lab`] is dropped:
//!
//! * the **work directory** `$TMPDIR/isolab-<id>/`, holding the workload executable (written
//!   once from the copy embedded in `lab`), the empty directory on which each container mounts its
//!   private root file system, and `scratch/`, which holds one directory per instance that runs
//!   the `io` kernel (see [`Scratch`]);
//! * the **cgroups** `<base>/isolab/<id>/<id>-<n>`, one per instance (see [`isolab_resources::cgroup`]), in
//!   each hierarchy the lab uses — and in every other hierarchy too when an OCI runtime given
//!   the instance's cgroup path made it there.
//!
//! A lab killed with SIGKILL cannot clean up; the next [`Lab::new`] (any `lab` command) removes
//! what dead labs left, and never touches what a live lab owns, whichever PID namespace either
//! runs in.

use isolab_container::profile::{Profile, Security};
use isolab_container::seccomp::SeccompError;
use isolab_payload::WORKLOAD_ELF;
use isolab_resources::cgroup::{CgroupError, Hierarchy};
use isolab_resources::disks::{DiskDir, DiskError};
use isolab_resources::image::{Image, ImageSpec};
use isolab_resources::network::Network;
use isolab_resources::ownership;
use isolab_resources::ownership::{Ledger, Owned, OwnershipError, Resource};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use std::{fs, io};

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
    /// The ledger of what the lab owns could not be kept.
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    /// The lab could not take its place in the cgroup hierarchy.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// An instance's disk could not be made.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The lab's network could not be built.
    #[error("{0}")]
    Network(String),
    /// The lab's directory of disks could not be made.
    #[error("{0}")]
    DiskDir(String),
    /// The lab's image could not be built.
    #[error("the lab's image: {0}")]
    Image(String),
    /// The field's tools could not be gathered.
    #[error("the field's tools: {0}")]
    Tools(String),
}

/// What one lab run is asked for: plain data, set from the command line before its first
/// instance starts, read by backends and experiments.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long to wait for an instance to reach a marker before giving up on it.
    pub timeout: Duration,
    /// The kernel Linux guests boot (`--kernel`); `None`: find one (see
    /// [`isolab_linux_guest::guest_kernel::find`]).
    pub guest_kernel: Option<PathBuf>,
    /// Run backends named on the command line even where they are unavailable (`--force`), to
    /// see how far they get.
    pub force: bool,
    /// How containers (isolab's, and the OCI bundles it writes) are configured beyond their
    /// namespaces (`--profile`).
    pub profile: Profile,
    /// A seccomp profile file to load instead of the one [`Settings::profile`] names (`None`: that
    /// profile's own, see [`Profile::seccomp`]).
    pub seccomp_profile: Option<PathBuf>,
    /// Where the directory of the instances' disks goes (see [`isolab_resources::disks`]).
    pub disk_parent: PathBuf,
    /// Run instances on the lab's layered image of this spec ([`isolab_resources::image`]) instead of the
    /// bare root holding only the workload.
    pub image_spec: Option<ImageSpec>,
    /// VMs on the image share one read-only disk of it, instead of a copy each.
    pub shared_image_disk: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            timeout: Duration::from_secs(120),
            guest_kernel: None,
            force: false,
            profile: Profile::default(),
            seccomp_profile: None,
            disk_parent: PathBuf::from(isolab_resources::disks::DEFAULT_PARENT),
            image_spec: None,
            shared_image_disk: false,
        }
    }
}

/// Host-side state shared by every instance of one lab run.
#[derive(Debug)]
pub struct Lab {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) workdir: PathBuf,
    cgroups: Result<Hierarchy, String>,
    /// What the lab owns, removed in reverse order when it is dropped: the work directory, then
    /// its cgroup subtrees.
    owned: Vec<Owned>,
    next_instance: AtomicU64,
    /// What the lab run is asked for (plain data, from the command line).
    pub settings: Settings,
    /// The profile compiled, and the containers' launcher: made on first use, kept for the
    /// lab's life (see [`Lab::security`]).
    pub(crate) security: OnceLock<Result<Arc<Security>, String>>,
    /// That directory, made on first use and claimed before.
    pub(crate) disks: OnceLock<Result<(DiskDir, Owned), String>>,
    /// The lab's network ([`isolab_resources::network`]), started on first use.
    pub(crate) network: OnceLock<Result<Arc<Network>, String>>,
    /// The disk under [`Lab::disk_parent`], which I/O limits throttle: found on first use.
    io_disk: OnceLock<Result<isolab_resources::cgroup::BlockDevice, String>>,
    /// That image, built on first use.
    pub(crate) image: OnceLock<Result<Arc<Image>, String>>,
    /// The field's tools ([`isolab_resources::tools`]), gathered on first use.
    pub(crate) tools: OnceLock<Result<Arc<isolab_resources::tools::Tools>, String>>,
    /// The lab's image as a VM's disk (an ext4 file system), built on first use.
    pub(crate) ext4: OnceLock<Result<Arc<isolab_resources::image::ext4::Ext4Image>, String>>,
    /// What backends made for the lab's whole life (a Docker image it built, KSM turned on),
    /// removed or restored when the lab ends.
    pub(crate) kept: std::sync::Mutex<Vec<Owned>>,
    /// The write end of the guardian's lifeline ([`ownership::guard`]); closed last.
    _lifeline: Option<std::os::fd::OwnedFd>,
}

impl Lab {
    /// A lab with its work directory under `$TMPDIR` (or /tmp).
    pub fn new() -> Result<Lab, LabError> {
        Lab::in_dir(&std::env::temp_dir())
    }

    /// A lab with its work directory under `parent`. First removes what dead labs left (see
    /// [`isolab_resources::ownership::reap`]).
    pub fn in_dir(parent: &Path) -> Result<Lab, LabError> {
        let registry = ownership::registry_dir();
        ownership::reap(&registry);
        let ledger = Ledger::open_in(&registry)?;
        // From here on a stop has something to remove: a second signal is told so.
        isolab_host::interrupt::will_clean_up();
        let mut lab = Lab {
            workdir: parent.join(format!("isolab-{}", ledger.id())),
            ledger,
            cgroups: Err("not yet detected".into()),
            owned: Vec::new(),
            next_instance: AtomicU64::new(0),
            settings: Settings::default(),
            security: OnceLock::new(),
            disks: OnceLock::new(),
            network: OnceLock::new(),
            io_disk: OnceLock::new(),
            image: OnceLock::new(),
            kept: std::sync::Mutex::new(Vec::new()),
            ext4: OnceLock::new(),
            tools: OnceLock::new(),
            _lifeline: None,
        };
        let claim = lab.ledger.claim(Resource::Dir {
            path: lab.workdir.clone(),
        })?;
        lab.owned.push(claim);
        make_workdir(&lab.workdir)?;
        lab.cgroups = match Hierarchy::detect() {
            Ok(h) => lab.adopt(h),
            Err(e) => Err(format!(
                "{e}; memory figures and limits are unavailable (fix: mount cgroup2 on \
                 /sys/fs/cgroup, as systemd does by default)"
            )),
        };
        // Only now: a rootless lab has moved into its own cgroup leaf, and the guardian, a copy
        // of the lab, starts there too (a process left in the delegated cgroup above would
        // forbid it to give controllers to the lab's instances).
        lab._lifeline = ownership::guard(&lab.ledger);
        Ok(lab)
    }

    /// Use `hierarchy` for instance cgroups instead of the detected one (tests use this to drive
    /// the cgroup v2 code on a v1 machine).
    pub fn with_cgroups(mut self, hierarchy: Hierarchy) -> Lab {
        self.cgroups = self.adopt(hierarchy);
        self
    }

    /// Make `hierarchy` this lab's: its instances under `<base>/<id>/`, claimed before use, and
    /// made now — a lab that may not make them (not root, and no delegated subtree) learns it
    /// here, runs without cgroups, and says why. The error is that reason.
    fn adopt(&mut self, hierarchy: Hierarchy) -> Result<Hierarchy, String> {
        let h = hierarchy.for_lab(self.ledger.id());
        match self.claim_and_enter(&h) {
            Ok(()) => Ok(h),
            Err(LabError::Cgroup(e)) => Err(h.unusable(&e)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn claim_and_enter(&mut self, h: &Hierarchy) -> Result<(), LabError> {
        for path in h.lab_dirs() {
            self.owned
                .push(self.ledger.claim(Resource::Cgroup { path })?);
        }
        // Docker's runtime, given an instance's path as `--cgroup-parent`, makes it in every
        // hierarchy it knows, read from each hierarchy's root.
        if let Some(relative) = h.lab_relative_path() {
            self.owned
                .push(self.ledger.claim(Resource::CgroupEverywhere { relative })?);
        }
        h.enter()?;
        h.prepare()?;
        Ok(())
    }

    /// The lab's id: random, unique across PID namespaces, part of the name of everything the
    /// lab makes.
    pub fn id(&self) -> &str {
        self.ledger.id()
    }

    /// The lab's ledger, for backends that make more than an instance's processes and cgroup
    /// (an OCI runtime's container): claim it there before making it.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
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

    /// The parent of every instance's scratch directory ([`Lab::scratch_for`]): the lab's own,
    /// mode 0700, so no one else can plant anything there.
    pub fn scratch_dir(&self) -> PathBuf {
        self.workdir.join("scratch")
    }

    /// Keep `owned` — something made for the lab's whole life — until the lab ends.
    pub fn keep(&self, owned: Owned) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(owned);
    }

    /// The cgroup hierarchy, or why there is none.
    pub fn cgroups(&self) -> Result<&Hierarchy, CgroupError> {
        self.cgroups
            .as_ref()
            .map_err(|why| CgroupError::Unusable(why.clone()))
    }

    /// The cgroup of a new instance called `name`, with `limits` applied; `None` when the lab
    /// has no cgroups and no limits are asked for: the instance then runs in the lab's own
    /// cgroup, and its memory figures are not measured. Limits without cgroups are an error
    /// (the experiments refuse them before anything starts, see
    /// `isolab_experiments::require_cgroups`).
    pub fn instance_cgroup(
        &self,
        name: &str,
        limits: &isolab_resources::cgroup::Limits,
    ) -> Result<Option<isolab_resources::cgroup::Cgroup>, CgroupError> {
        match &self.cgroups {
            Ok(_) => self.cgroup_for(name, limits).map(Some),
            Err(_) if !limits.any() => Ok(None),
            Err(why) => Err(CgroupError::Unusable(why.clone())),
        }
    }

    /// The disk that I/O limits (`--io-limit`) throttle: the whole disk under the instances'
    /// disk directory ([`isolab_resources::disks::whole_disk_of`]). Set [`Lab::disk_parent`] first; the
    /// answer is kept for the lab's life. The error says why there is none.
    pub fn io_disk(&self) -> Result<isolab_resources::cgroup::BlockDevice, String> {
        self.io_disk
            .get_or_init(|| isolab_resources::disks::whole_disk_of(&self.settings.disk_parent))
            .clone()
    }

    /// The cgroup `name` under `limits`, with its I/O limit on [`Lab::io_disk`] when it has one:
    /// for backends that need a cgroup whatever happens (see [`Lab::instance_cgroup`]).
    pub fn cgroup_for(
        &self,
        name: &str,
        limits: &isolab_resources::cgroup::Limits,
    ) -> Result<isolab_resources::cgroup::Cgroup, CgroupError> {
        let disk = match limits.io_bps {
            Some(_) => Some(self.io_disk().map_err(CgroupError::NoIoDevice)?),
            None => None,
        };
        self.cgroups()?.create_on(name, limits, disk.as_ref())
    }

    /// Put the device policy in force for the instance cgroup `cg` (see
    /// [`isolab_resources::cgroup::devices`]): how, in words.
    pub fn confine_devices(
        &self,
        cg: &mut isolab_resources::cgroup::Cgroup,
    ) -> Result<String, CgroupError> {
        self.cgroups()?.confine_devices(cg)
    }

    /// [`Lab::cgroup_for`], made in every cgroup hierarchy mounted here
    /// ([`isolab_resources::cgroup::Hierarchy::create_everywhere`]): for a container runtime that puts its
    /// container in each hierarchy it knows.
    pub fn cgroup_everywhere(
        &self,
        name: &str,
        limits: &isolab_resources::cgroup::Limits,
    ) -> Result<isolab_resources::cgroup::Cgroup, CgroupError> {
        let disk = match limits.io_bps {
            Some(_) => Some(self.io_disk().map_err(CgroupError::NoIoDevice)?),
            None => None,
        };
        self.cgroups()?
            .create_everywhere(name, limits, disk.as_ref())
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
                Security::prepare(
                    self.settings.profile,
                    self.settings.seccomp_profile.as_deref(),
                )
                .map(Arc::new)
                .map_err(|e: SeccompError| e.to_string())
            })
            .clone()
    }

    /// True once [`Lab::security`] has been prepared (successfully or not).
    pub fn security_ready(&self) -> bool {
        self.security.get().is_some()
    }

    /// A name unique on this host for the next instance: `<lab id>-<n>`. It names the instance's
    /// cgroup, its container's host name, an OCI runtime's container id: whoever sees it, in
    /// `ps` or `/proc/PID/cgroup`, can tell which lab it belongs to.
    pub fn next_instance_name(&self) -> String {
        format!(
            "{}-{}",
            self.id(),
            self.next_instance.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The network first: its peer's threads end, its namespace goes. Then the disks, and
        // what backends kept for the lab's life, newest first.
        drop(self.network.take());
        drop(self.disks.take());
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        for owned in kept.into_iter().rev() {
            drop(owned);
        }
        // Newest first: the cgroups, then the work directory. Each `Owned` removes its resource
        // and strikes it from the ledger; the ledger then leaves the registry.
        while let Some(owned) = self.owned.pop() {
            drop(owned);
        }
        // Rootless on cgroup v2 the lab lives in a leaf of its own, which it cannot remove while
        // it lives. Its guardian must not reap the leaf before the process has exited — it
        // would kill the lab in it, between here and its exit, and the lab's exit status would
        // be a SIGKILL's. So the lifeline stays open until the kernel closes it at exit; only
        // then does the guardian read its end of file.
        let in_own_leaf = self.cgroups.as_ref().is_ok_and(|h| h.own_leaf().is_some());
        if in_own_leaf && self.ledger.has_open_claims() {
            if let Some(lifeline) = self._lifeline.take() {
                let _ = lifeline.into_raw_fd();
            }
        }
    }
}

/// Make the work directory (already claimed) and fill it.
fn make_workdir(dir: &Path) -> Result<(), LabError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LabError::Workdir { path, source }
    };
    fs::create_dir(dir).map_err(err(dir))?;
    let made = (|| {
        // 0755 all the way: a container in a user namespace runs as the invoking user's uid and
        // must be able to reach and execute the workload.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        let exe = dir.join("isolab-workload");
        fs::write(&exe, WORKLOAD_ELF)?;
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
        fs::create_dir(dir.join("root"))?;
        let scratch = dir.join("scratch");
        fs::DirBuilder::new().mode(0o700).create(&scratch)?;
        if nix::unistd::geteuid().is_root() {
            crate::provide::seal_scratch(&scratch)?;
        }
        Ok(())
    })();
    made.map_err(err(dir))
}
