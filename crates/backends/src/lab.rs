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
use isolab_payload::{Given, Kernel, Spec, WORKLOAD_ELF};
use isolab_resources::cgroup::{CgroupError, Hierarchy};
use isolab_resources::disks::{Disk, DiskDir, DiskError, Parent};
use isolab_resources::image::{Image, ImageSpec};
use isolab_resources::network::{Link, Network};
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
    ledger: Arc<Ledger>,
    workdir: PathBuf,
    cgroups: Result<Hierarchy, String>,
    /// What the lab owns, removed in reverse order when it is dropped: the work directory, then
    /// its cgroup subtrees.
    owned: Vec<Owned>,
    next_instance: AtomicU64,
    /// What the lab run is asked for (plain data, from the command line).
    pub settings: Settings,
    /// The profile compiled, and the containers' launcher: made on first use, kept for the
    /// lab's life (see [`Lab::security`]).
    security: OnceLock<Result<Arc<Security>, String>>,
    /// That directory, made on first use and claimed before.
    disks: OnceLock<Result<(DiskDir, Owned), String>>,
    /// The lab's network ([`isolab_resources::network`]), started on first use.
    network: OnceLock<Result<Arc<Network>, String>>,
    /// The disk under [`Lab::disk_parent`], which I/O limits throttle: found on first use.
    io_disk: OnceLock<Result<isolab_resources::cgroup::BlockDevice, String>>,
    /// That image, built on first use.
    image: OnceLock<Result<Arc<Image>, String>>,
    /// The lab's image as a VM's disk (an ext4 file system), built on first use.
    ext4: OnceLock<Result<Arc<isolab_resources::image::ext4::Ext4Image>, String>>,
    /// What backends made for the lab's whole life (a Docker image it built, KSM turned on),
    /// removed or restored when the lab ends.
    kept: std::sync::Mutex<Vec<Owned>>,
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

    /// A new scratch directory for the instance `name`, owned by `owner` (uid, gid) — who the
    /// instance's root is on the host — or by the lab. See [`Scratch`].
    pub fn scratch_for(&self, name: &str, owner: Option<(u32, u32)>) -> Result<Scratch, LabError> {
        let path = self.scratch_dir().join(name);
        let err = |source| LabError::Workdir {
            path: path.clone(),
            source,
        };
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(err)?;
        let scratch = Scratch { path: path.clone() };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err)?;
        }
        Ok(scratch)
    }

    /// [`Lab::scratch_for`] when `spec` runs the `io` kernel, the only one that writes files:
    /// no other instance gets a directory to share.
    pub fn scratch_if_io(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<Scratch>, LabError> {
        (spec.kernel == Kernel::Io)
            .then(|| self.scratch_for(name, owner))
            .transpose()
    }

    /// A disk of `spec.disk_bytes()` for the instance `name` when `spec` runs a disk kernel,
    /// owned by `owner` (see [`Lab::scratch_for`]); none otherwise.
    pub fn disk_if_needed(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Option<Disk>, LabError> {
        if !spec.kernel.needs_disk() {
            return Ok(None);
        }
        Ok(Some(self.disk_dir()?.disk(
            name,
            spec.disk_bytes(),
            owner,
        )?))
    }

    /// The lab's directory of disks, made (and claimed) on first use, in a `--disk-dir` found
    /// safe from other users (see [`isolab_resources::disks`]).
    fn disk_dir(&self) -> Result<&DiskDir, LabError> {
        let dir = self
            .disks
            .get_or_init(|| {
                let parent = Parent::open(&self.settings.disk_parent).map_err(|e| e.to_string())?;
                DiskDir::make(&parent, &self.ledger).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|why| LabError::DiskDir(why.clone()))?;
        Ok(&dir.0)
    }

    /// The lab's image as a file system for a VM's disk: built once, in the disk directory.
    fn image_disk(
        &self,
        image: &Image,
    ) -> Result<Arc<isolab_resources::image::ext4::Ext4Image>, LabError> {
        self.ext4
            .get_or_init(|| {
                let dir = self.disk_dir().map_err(|e| e.to_string())?;
                let view = self.workdir.join("image-view");
                fs::create_dir_all(&view).map_err(|e| e.to_string())?;
                let file = dir.new_file(IMAGE_DISK).map_err(|e| e.to_string())?;
                isolab_resources::image::ext4::Ext4Image::build(image, &view, &file)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(LabError::Image)
    }

    /// Everything `spec` needs for the instance `name` whose root is `owner` on the host (see
    /// [`Lab::scratch_for`]).
    pub fn provide(
        &self,
        spec: &Spec,
        name: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<Provisions, LabError> {
        let image = self.image()?;
        Ok(Provisions {
            scratch: self.scratch_if_io(spec, name, owner)?,
            disk: self.disk_if_needed(spec, name, owner)?,
            link: self.link_if_needed(spec)?,
            libs_on_host: image.as_ref().map(|i| {
                i.layers[0]
                    .path
                    .join(isolab_resources::image::LIBS_INSIDE.trim_start_matches('/'))
            }),
            image,
            root: None,
            upper: None,
            guest_ip: None,
        })
    }

    /// What a Linux guest running `spec` is given (see [`isolab_linux_guest::devices`]): a disk
    /// for a disk kernel, a tap to the peer for a network kernel, and the words that tell its
    /// `/init` about them; and the [`Provisions`] that hold what must go when it ends.
    pub fn guest_devices(
        &self,
        spec: &Spec,
        name: &str,
    ) -> Result<(isolab_linux_guest::devices::GuestDevices, Provisions), LabError> {
        use isolab_linux_guest::devices::{BlockBacking, GuestDevices, NetBacking};
        let mut devices = GuestDevices::default();
        let mut provisions = Provisions {
            disk: self.disk_if_needed(spec, name, None)?,
            ..Provisions::default()
        };
        if let Some(disk) = &provisions.disk {
            devices.block = Some(BlockBacking {
                path: disk.path().to_path_buf(),
                read_only: false,
            });
            devices.init_words.push(format!("disk={DISK_INSIDE}"));
        } else if let Some(image) = self.image()? {
            // On the lab's image: a copy of it as the VM's disk — or, asked for, the one
            // read-only disk every VM shares — which its /init mounts and loads the libraries
            // from, into the guest's own page cache either way.
            let master = self.image_disk(&image)?;
            if self.settings.shared_image_disk {
                devices.block = Some(BlockBacking {
                    path: master.path().to_path_buf(),
                    read_only: true,
                });
            } else {
                let copy = self.disk_dir()?.copy_of(name, IMAGE_DISK)?;
                devices.block = Some(BlockBacking {
                    path: copy.path().to_path_buf(),
                    read_only: false,
                });
                provisions.disk = Some(copy);
            }
            devices.image = true;
            devices.init_words.extend([
                format!("image={DISK_INSIDE}"),
                format!("libs=/image{}", isolab_resources::image::LIBS_INSIDE),
            ]);
            provisions.image = Some(image);
        }
        if spec.kernel.needs_network() {
            let link = self
                .network()?
                .tap_link()
                .map_err(|e| LabError::Network(e.to_string()))?;
            let ip = link.ip.octets();
            devices.init_words.extend([
                format!("net={}/{}", link.ip, isolab_resources::network::PREFIX),
                format!("peer={}", link.peer_ip),
            ]);
            provisions.guest_ip = Some(link.ip);
            devices.net = Some(NetBacking {
                tap: link.tap,
                // Locally administered (bit 1 of the first byte), unicast; the rest the
                // guest's address, so every link's card differs.
                mac: [0x52, 0x54, 0x00, ip[1], ip[2], ip[3]],
            });
        }
        Ok((devices, provisions))
    }

    /// The lab's network, started on first use: its peer, and links to it (see
    /// [`isolab_resources::network`]).
    pub fn network(&self) -> Result<Arc<Network>, LabError> {
        self.network
            .get_or_init(|| Network::start().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(LabError::Network)
    }

    /// Keep `owned` — something made for the lab's whole life — until the lab ends.
    pub fn keep(&self, owned: Owned) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(owned);
    }

    /// Where containers' writable layers go: `overlay/` in the work directory, made on first use.
    pub fn overlay_dir(&self) -> Result<PathBuf, LabError> {
        let dir = self.workdir.join("overlay");
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(source) => Err(LabError::Workdir { path: dir, source }),
        }
    }

    /// The layered image instances run on, when the lab was asked for one ([`Lab::image_spec`]):
    /// built in the work directory on first use.
    pub fn image(&self) -> Result<Option<Arc<Image>>, LabError> {
        let Some(spec) = self.settings.image_spec else {
            return Ok(None);
        };
        self.image
            .get_or_init(|| {
                Image::build(&self.workdir.join("image"), &spec, WORKLOAD_ELF)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map(Some)
            .map_err(LabError::Image)
    }

    /// A link to the peer when `spec` runs a network kernel; none otherwise.
    pub fn link_if_needed(&self, spec: &Spec) -> Result<Option<Link>, LabError> {
        if !spec.kernel.needs_network() {
            return Ok(None);
        }
        let link = self
            .network()?
            .link()
            .map_err(|e| LabError::Network(e.to_string()))?;
        Ok(Some(link))
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

/// Where a container finds its scratch directory.
pub const SCRATCH_INSIDE: &str = "/scratch";
/// Where a container or a VM finds its disk.
pub const DISK_INSIDE: &str = "/dev/vda";
/// The lab's image as a VM's disk, in the disk directory.
const IMAGE_DISK: &str = "image.ext4";

/// What the lab gives one instance besides its processes, by the kernel it runs: a scratch
/// directory (`io`), a disk (`disk-*`), a link to the peer (`net-*`). Each goes when dropped.
#[derive(Debug, Default)]
pub struct Provisions {
    /// The `io` kernel's directory.
    pub scratch: Option<Scratch>,
    /// The disk kernels' disk.
    pub disk: Option<Disk>,
    /// The network kernels' link to the peer.
    pub link: Option<Link>,
    /// The layered image the instance runs on, if the lab uses one.
    pub image: Option<Arc<Image>>,
    /// Its libraries' directory on the host (where a process loads them from: the base layer).
    libs_on_host: Option<PathBuf>,
    /// An OCI bundle's root: the image mounted on the host (before `upper`, so that it is
    /// unmounted before its writable layer goes).
    pub root: Option<isolab_resources::image::overlay::Mounted>,
    /// A container's writable layer over the image.
    pub upper: Option<isolab_resources::image::overlay::Upper>,
    /// A VM's address on its tap link to the peer (its guest sets it up).
    pub guest_ip: Option<std::net::Ipv4Addr>,
}

impl Provisions {
    /// What the workload is told: host paths (`inside` false: a process), or the paths a
    /// container mounts them at.
    pub fn given(&self, inside: bool) -> Given<'_> {
        Given {
            scratch: self.scratch.as_ref().map(|s| {
                if inside {
                    Path::new(SCRATCH_INSIDE)
                } else {
                    s.path()
                }
            }),
            disk: self.disk.as_ref().map(|d| {
                if inside {
                    Path::new(DISK_INSIDE)
                } else {
                    d.path()
                }
            }),
            peer: self.link.as_ref().map(|l| l.peer_ip),
            net: None,
            libs: self.libs_on_host.as_deref().map(|host| {
                if inside {
                    Path::new(isolab_resources::image::LIBS_INSIDE)
                } else {
                    host
                }
            }),
        }
    }

    /// Give them to `instance`: for a network kernel, the peer's count of the bytes it received
    /// ([`Provisions::peer_note`]), taken once the instance has ended; and their removal, as
    /// its last clean-up step.
    pub fn hand_to(self, lab: &Lab, instance: &mut crate::Instance) {
        if let Some(note) = self.peer_note(lab) {
            instance.at_end(note);
        }
        instance.clean_up_too(self.removal());
    }

    /// Their removal, as an instance's clean-up step.
    pub fn removal(self) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(self))
    }

    /// For a network kernel's instance: once it has ended, how many bytes the lab's peer
    /// received from it (the host side's count, to hold against what the kernel reports).
    pub fn peer_note(&self, lab: &Lab) -> Option<crate::instance::EndNote> {
        let ip = self.link.as_ref().map(|l| l.ip).or(self.guest_ip)?;
        let network = lab.network().ok()?;
        Some(Box::new(move || {
            // The peer writes a connection down once it has served it; the instance has
            // ended, so its connections have too, or will in a moment.
            let mut received = network.received_from(ip);
            for _ in 0..50 {
                if !received.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                received = network.received_from(ip);
            }
            let bytes: u64 = received.iter().map(|r| r.bytes).sum();
            vec![(
                isolab_results::info::PEER_BYTES.to_string(),
                bytes.to_string(),
            )]
        }))
    }
}

/// The one directory an instance shares with the host: where its `io` kernel writes.
///
/// Shared paths are where a lab that teaches isolation could itself open a way out, so this
/// one is shared as narrowly as the kernel allows:
///
/// * **one per instance**, made just before the instance starts and removed when it ends
///   (dropping this value): no instance sees another's files, and none finds what an earlier
///   one planted (a symbolic link named like the next instance's file, say);
/// * **mode 0700, owned by the instance's root** as the host sees it: an ordinary user of the
///   host cannot even look inside, so a setuid program or a device node written by a container
///   whose root is the host's root is out of every user's reach. Its parent, `scratch/`, is the
///   lab's own (0700 too), so no one else can create anything beside it;
/// * **nosuid, nodev, noexec**: as root, the lab binds `scratch/` onto itself with these flags
///   (every bind mount of a directory below it inherits them: containers', runtimes', Docker's),
///   and each container mounts its own directory with them again. A setuid bit written there
///   does nothing, a device node cannot be opened through it, nothing there can be run.
///
/// The files themselves are written without a name to plant ahead (`O_TMPFILE`) or with
/// `O_CREAT | O_EXCL | O_NOFOLLOW`: see the workload's and the VMM's scratch file.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// The directory, on the host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its removal, as an instance's clean-up step (see [`crate::instance::Parts`]).
    pub fn removal(self) -> Box<dyn FnOnce() + Send> {
        Box::new(move || drop(self))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // What the instance left (it may have made subdirectories). A lab killed before this
        // runs leaves the directory in its work directory, which its guardian removes.
        let _ = fs::remove_dir_all(&self.path);
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
            seal_scratch(&scratch)?;
        }
        Ok(())
    })();
    made.map_err(err(dir))
}

/// Bind `scratch` onto itself with `nosuid`, `nodev` and `noexec` (see [`Scratch`]). The mount
/// lives below the work directory, whose removal unmounts it first (also when the lab's
/// guardian or the next lab removes it: [`isolab_resources::ownership`]).
fn seal_scratch(scratch: &Path) -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    // A bind mount takes its flags only from a second call, a remount of the bind (`restrict`).
    mount(
        Some(scratch),
        scratch,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    isolab_container::rootfs::restrict(scratch)?;
    Ok(())
}
