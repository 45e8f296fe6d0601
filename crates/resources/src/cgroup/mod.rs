//! Control groups: one per instance, created before the instance starts.
//!
//! A cgroup does two jobs in isolab:
//!
//! * **accounting** — every page an instance's processes allocate, including kernel memory such as
//!   namespace structures, page tables and KVM's vCPU state, is charged to the cgroup of the task
//!   that allocated it. Creating the cgroup *before* the instance's first process does anything
//!   means the whole instance is counted, not just its workload;
//! * **limits** — memory, number of processes, CPU time and disk bandwidth, which is what makes
//!   a container a container rather than a process with namespaces.
//!
//! Linux has two cgroup interfaces. **v2** (one unified tree, `memory.max`, `memory.peak`) is what
//! most machines run today. **v1** (one tree per controller: `/sys/fs/cgroup/memory/...`,
//! `memory.limit_in_bytes`) survives on older and "hybrid" systems. Both sit behind the same small
//! interface here; [`v1`] and [`v2`] hold the file names that differ.

pub mod activity;
pub mod devices;
pub mod in_force;
pub mod placement;
mod v1;
mod v2;

pub use activity::Activity;
pub use placement::Placement;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use std::{fs, io};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup file system with a memory controller is mounted.
    #[error(
        "no usable cgroup hierarchy with a memory controller (looked in /proc/self/mountinfo)"
    )]
    NotMounted,
    /// A cgroup file or directory could not be used.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// The lab cannot use cgroups here; the text says why and the command that fixes it.
    #[error("no usable cgroups: {0}")]
    Unusable(String),
    /// A limit needs a controller that is not available here.
    #[error("the {0} controller is not available (see `lab doctor`)")]
    MissingController(&'static str),
    /// An I/O limit was asked for, and there is no disk to apply it to; the text says why.
    #[error("an I/O limit needs a disk to limit: {0}")]
    NoIoDevice(String),
    /// The cgroup still had processes after they were all killed.
    #[error("cgroup {0} still busy after killing its processes")]
    Busy(PathBuf),
    /// The device policy ([`devices`]) could not be put in force; the text says why.
    #[error("the device policy: {0}")]
    Devices(String),
}

impl CgroupError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
        move |source| CgroupError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the failure is a missing permission (the caller should suggest running as root
    /// or delegating a cgroup subtree).
    pub fn is_permission(&self) -> bool {
        matches!(self, CgroupError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::PermissionDenied)
                || source.raw_os_error() == Some(libc::EROFS))
    }
}

/// Which cgroup interface the machine offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// One tree per controller.
    V1,
    /// The unified tree.
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Resource limits of one instance. `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (v2 `memory.max`, v1 `memory.limit_in_bytes`); swap is disabled for
    /// the instance so the limit is a hard one.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (`pids.max`), which stops a fork bomb.
    pub pids: Option<u64>,
    /// CPU bandwidth in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us`): 0.5 means half a core.
    pub cpus: Option<f64>,
    /// Disk bandwidth in bytes per second, reads and writes each (v2 `io.max`, v1
    /// `blkio.throttle.read_bps_device` and `write_bps_device`), on one disk: the
    /// [`BlockDevice`] the instance's disk file lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_bps: Option<u64>,
}

/// A whole disk, by its device numbers: what an I/O limit applies to.
///
/// Both cgroup interfaces throttle a *disk*, named by `major:minor`, not a file or a file
/// system: the block layer counts and delays the requests that reach a disk's request queue,
/// and only a whole disk has one (a partition's requests are the disk's). So the lab finds the
/// disk under the directory that holds the instances' disk files (see
/// [`crate::disks::whole_disk_of`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Major device number (the driver: 8 for SCSI/SATA disks, 253 or 254 for virtio, ...).
    pub major: u32,
    /// Minor device number (which disk of that driver).
    pub minor: u32,
    /// Its kernel name (`vda`, `nvme0n1`, `sda`), for messages.
    pub name: String,
}

impl std::fmt::Display for BlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.major, self.minor)
    }
}

/// The most tasks `pids.max` accepts: the kernel's `PID_MAX_LIMIT` on 64-bit machines (4 Mi).
/// A larger number is refused with EINVAL; a machine cannot have more PIDs anyway.
pub const MAX_PIDS: u64 = 4 * 1024 * 1024;

/// The CFS bandwidth period isolab writes, in µs: a limit of 0.5 cores is a quota of 50 ms of CPU
/// time in every 100 ms of wall time.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CPU limit, in cores. The scheduler refuses a quota below 1 ms per period
/// (`min_cfs_quota_period`): shorter slices would cost more in throttling than they limit.
pub const MIN_CPUS: f64 = 1_000.0 / CPU_PERIOD_US as f64;

/// The largest memory limit, in MiB (1 TiB): limits are written in bytes, and a number of MiB
/// near 2^44 would overflow 64 bits once multiplied by 2^20.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// The smallest memory limit, in MiB: below this not even the workload's own start-up fits, and
/// the instance would die of an OOM kill before its first marker.
pub const MIN_MEMORY_MIB: u64 = 4;

/// The largest I/O limit, in MiB/s (1 TiB/s: far beyond any disk, and far from overflowing 64
/// bits once multiplied by 2^20).
pub const MAX_IO_MIB: u64 = 1 << 20;

impl Limits {
    /// True when any limit is set.
    pub fn any(&self) -> bool {
        self.memory_bytes.is_some()
            || self.pids.is_some()
            || self.cpus.is_some()
            || self.io_bps.is_some()
    }

    /// Limits from the command line's figures (`--memory-limit` MiB, `--pids-limit`,
    /// `--cpu-limit` cores, `--io-limit` MiB/s), each checked against the range the kernel
    /// accepts on a machine with `cpus` CPUs, so that a bad one is refused before anything
    /// starts, with the range, rather than by cgroupfs halfway through a run as a bare "Invalid
    /// argument".
    pub fn checked(
        memory_mib: Option<u64>,
        pids: Option<u64>,
        cpus: Option<f64>,
        io_mib: Option<u64>,
        host_cpus: usize,
    ) -> Result<Limits, String> {
        let flag = |name: &'static str| move |e: String| format!("--{name} {e}");
        if let Some(m) = memory_mib {
            check_memory_mib(m).map_err(flag("memory-limit"))?;
        }
        if let Some(p) = pids {
            check_pids(p).map_err(flag("pids-limit"))?;
        }
        if let Some(c) = cpus {
            check_cpus(c, host_cpus).map_err(flag("cpu-limit"))?;
        }
        if let Some(m) = io_mib {
            check_io_mib(m).map_err(flag("io-limit"))?;
        }
        Ok(Limits {
            memory_bytes: memory_mib.map(|m| m << 20),
            pids,
            cpus,
            io_bps: io_mib.map(|m| m << 20),
        })
    }
}

/// `--io-limit`, in MiB/s: within [1, MAX_IO_MIB]. (0 would mean "no limit" to v1's
/// `blkio.throttle.*` files, not "nothing at all".)
pub fn check_io_mib(mib: u64) -> Result<u64, String> {
    if (1..=MAX_IO_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(format!(
            "{mib} MiB/s is out of range: 1 to {MAX_IO_MIB} MiB/s"
        ))
    }
}

/// `--memory-limit`, in MiB: within [MIN_MEMORY_MIB, MAX_MEMORY_MIB].
pub fn check_memory_mib(mib: u64) -> Result<u64, String> {
    if (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&mib) {
        Ok(mib)
    } else {
        Err(format!(
            "{mib} MiB is out of range: {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB"
        ))
    }
}

/// `--pids-limit`: within [1, MAX_PIDS].
pub fn check_pids(pids: u64) -> Result<u64, String> {
    if (1..=MAX_PIDS).contains(&pids) {
        Ok(pids)
    } else {
        Err(format!(
            "{pids} is out of range: 1 to {MAX_PIDS} (the kernel's PID_MAX_LIMIT)"
        ))
    }
}

/// `--cpu-limit`, in cores: within [MIN_CPUS, `host_cpus`]. More cores than the machine has
/// would limit nothing.
pub fn check_cpus(cpus: f64, host_cpus: usize) -> Result<f64, String> {
    if cpus.is_finite() && cpus >= MIN_CPUS && cpus <= host_cpus as f64 {
        Ok(cpus)
    } else {
        Err(format!(
            "{cpus} is out of range: {MIN_CPUS} to {host_cpus} cores (at least 1 ms \
             of CPU time per {} ms period; at most this machine's CPUs)",
            CPU_PERIOD_US / 1000
        ))
    }
}

/// The CFS quota of `cpus` cores per [`CPU_PERIOD_US`], in µs.
fn cpu_quota_us(cpus: f64) -> u64 {
    (cpus * CPU_PERIOD_US as f64).round() as u64
}

/// Memory figures of one cgroup, in bytes.
///
/// `current_bytes` and `peak_bytes` are the kernel's charge counters. They are fast to update
/// because each CPU charges pages in batches (64 pages at a time) and keeps the surplus in a
/// per-CPU stock, so they can run up to 256 KiB per CPU ahead of what the cgroup really holds.
/// For small instances that error is as large as what is measured, so the breakdown below — from
/// `memory.stat`, which counts pages exactly — is what isolab's memory figures use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReading {
    /// Charged now (v2 `memory.current`, v1 `memory.usage_in_bytes`), batch-rounded.
    pub current_bytes: u64,
    /// Highest charge since creation (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`), when the
    /// kernel offers it; batch-rounded like `current_bytes`.
    pub peak_bytes: Option<u64>,
    /// Anonymous memory: heaps, stacks, and a VM's guest RAM (v2 `anon`, v1 `total_rss`).
    pub anon_bytes: Option<u64>,
    /// Page cache and tmpfs, e.g. a container's root file system (v2 `file`, v1 `total_cache`).
    pub file_bytes: Option<u64>,
    /// Kernel memory: page tables, kernel stacks, namespaces, KVM's structures (v2 `kernel`, v1
    /// `memory.kmem.usage_in_bytes`).
    pub kernel_bytes: Option<u64>,
}

impl MemoryReading {
    /// anon + file + kernel when the breakdown is known, else the charge counter.
    pub fn charged_bytes(&self) -> u64 {
        match (self.anon_bytes, self.file_bytes, self.kernel_bytes) {
            (Some(a), Some(f), Some(k)) => a + f + k,
            _ => self.current_bytes,
        }
    }
}

/// The cgroup controllers isolab uses (v2 names; v1 calls `io` `blkio`). `io` is switched on
/// only for instances with an I/O limit ([`Hierarchy::create_on`]).
pub const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "io"];

/// Where instance cgroups are created, found once per lab run.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    version: Version,
    /// v2: one directory. v1: one directory per controller, in [`CONTROLLERS`] order where
    /// mounted (memory always first).
    bases: Vec<(String, PathBuf)>,
    /// Controllers that are usable under `bases`.
    controllers: Vec<String>,
    /// v1: the lab's directory in every other mounted hierarchy — those of controllers the lab
    /// sets no limit with (`devices`, `freezer`, `cpuset`, `name=systemd`, ...) and, on a
    /// hybrid machine, the cgroup2 tree — labelled by their controllers (`cgroup2` for the
    /// tree). An OCI runtime puts its container in every hierarchy it knows; the lab makes the
    /// instance there too, so that the container is inside the instance everywhere
    /// ([`Hierarchy::create_everywhere`]).
    elsewhere: Vec<(String, PathBuf)>,
    /// A human description, e.g. "v1 (hybrid)".
    description: String,
    /// Rootless cgroup v2: the delegated cgroup the lab runs in. The lab must move itself into
    /// a leaf below it before it may give its instances controllers (see [`v2`]).
    delegated: Option<PathBuf>,
    /// The lab whose instances these bases hold ([`Hierarchy::for_lab`]).
    lab: Option<String>,
    /// The device policy's BPF program, loaded on first use ([`devices`]).
    device_program: devices::ProgramCache,
}

impl Hierarchy {
    /// Find the cgroup file system and the directory under which this lab creates its cgroups.
    ///
    /// The base is `<our own cgroup>/isolab` on v1 (so whatever limits the lab itself runs under
    /// also bound its instances), and on v2 `/sys/fs/cgroup/isolab` when we may write there (root)
    /// or else `<our own cgroup>/isolab` (a delegated subtree, e.g. under `systemd-run --user
    /// --scope -p Delegate=yes`).
    pub fn detect() -> Result<Hierarchy, CgroupError> {
        let mountinfo = read_to_string(Path::new("/proc/self/mountinfo"))?;
        let own = read_to_string(Path::new("/proc/self/cgroup"))?;
        let mounts = parse_mounts(&mountinfo);
        // Prefer v2 when the unified tree carries the memory controller; otherwise use v1 if its
        // memory hierarchy is mounted ("hybrid" machines mount an empty v2 tree beside v1).
        if let Some(h) = v2::detect(&mounts, &own)? {
            return Ok(h);
        }
        v1::detect(&mounts, &own)
    }

    /// A v2 hierarchy rooted at `base` (which must be inside a mounted cgroup2 tree), using the
    /// controllers its parent offers. `detect` chooses the base itself; this exists so tests can
    /// exercise the v2 code on a machine whose memory controller is in v1.
    pub fn v2_at(base: PathBuf) -> Hierarchy {
        let parent = base.parent().unwrap_or(&base).to_path_buf();
        let offered = fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
        let offered: Vec<String> = offered.split_whitespace().map(str::to_string).collect();
        v2::at(base, &offered)
    }

    /// A v2 hierarchy as a lab that is not root uses it: in the delegated cgroup `own` (e.g. a
    /// `systemd-run --user --scope -p Delegate=yes` scope), the lab moves itself into a leaf of
    /// its own and its instances go under `own/isolab`. `detect` does this for a non-root lab on a
    /// v2 machine; tests use it to exercise that path as root.
    pub fn v2_delegated(own: PathBuf) -> Hierarchy {
        v2::delegated(own)
    }

    /// The cgroup interface in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// A description for `lab doctor` and the results' environment record.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Controllers isolab can use.
    pub fn controllers(&self) -> &[String] {
        &self.controllers
    }

    /// The directory (per controller on v1) under which instance cgroups are created.
    pub fn bases(&self) -> impl Iterator<Item = &Path> {
        self.bases.iter().map(|(_, p)| p.as_path())
    }

    /// The hierarchy of one lab: its instances' cgroups go into a directory of the lab's own,
    /// `<base>/<lab id>/`, so that everything a lab made in a hierarchy is one subtree, named
    /// for the lab — removed as one when the lab ends, or by the next lab when it was killed.
    pub fn for_lab(&self, lab: &str) -> Hierarchy {
        let mut h = self.clone();
        if let Some(old) = &h.lab {
            for (_, base) in h.bases.iter_mut().chain(h.elsewhere.iter_mut()) {
                if base.ends_with(old) {
                    base.pop();
                }
            }
        }
        for (_, base) in h.bases.iter_mut().chain(h.elsewhere.iter_mut()) {
            base.push(lab);
        }
        h.lab = Some(lab.to_string());
        h
    }

    /// The directories a lab makes in this hierarchy, which it must claim first (see
    /// [`crate::ownership`]): its bases (in every hierarchy, on v1) and, rootless on v2, the
    /// leaf it moves itself into.
    pub fn lab_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .bases
            .iter()
            .chain(&self.elsewhere)
            .map(|(_, p)| p.clone())
            .collect();
        dirs.extend(self.own_leaf());
        dirs
    }

    /// Rootless on v2: the leaf the lab moves itself into, and so lives in until it exits.
    pub fn own_leaf(&self) -> Option<PathBuf> {
        match (&self.delegated, &self.lab) {
            (Some(own), Some(lab)) => Some(v2::leaf(own, lab)),
            _ => None,
        }
    }

    /// The path of the lab's base in the memory hierarchy relative to that hierarchy's root: the
    /// path an OCI runtime given the instances' `cgroupsPath` uses in *every* hierarchy.
    pub fn lab_relative_path(&self) -> Option<PathBuf> {
        let base = self.bases.first().map(|(_, b)| b)?;
        relative_to_mount(base).map(PathBuf::from)
    }

    /// Make the lab's base directories, with the controllers enabled on v2: the first thing a
    /// lab does with its cgroups, so that a lab that may not create them learns it at once,
    /// not at its first instance. Claim [`Hierarchy::lab_dirs`] first.
    pub fn prepare(&self) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => self
                .bases()
                .try_for_each(|base| v2::prepare_base(base, &self.enabled(false))),
            // The memory hierarchy is the one every instance uses.
            Version::V1 => self.bases().take(1).try_for_each(ensure_dir_all),
        }
    }

    /// True when the lab runs in a delegated cgroup v2 subtree of its own (not root).
    pub fn is_delegated(&self) -> bool {
        self.delegated.is_some()
    }

    /// Why this hierarchy cannot be used after `error`, with the command that fixes it.
    pub fn unusable(&self, error: &CgroupError) -> String {
        let fix = match (self.version, error.is_permission()) {
            (Version::V2, true) => {
                "run lab in a delegated cgroup (systemd-run --user --scope -p Delegate=yes lab ...) \
                 or with sudo"
            }
            (Version::V1, true) => "cgroup v1 cannot be delegated to an ordinary user: run lab with sudo",
            _ => "see `lab doctor`",
        };
        format!(
            "{}: {error}; memory figures and limits are unavailable (fix: {fix})",
            self.description
        )
    }

    /// Rootless v2: move the lab into its leaf (claim [`Hierarchy::lab_dirs`] first). Elsewhere
    /// nothing to do.
    pub fn enter(&self) -> Result<(), CgroupError> {
        match (&self.delegated, &self.lab) {
            (Some(own), Some(lab)) => v2::enter_leaf(own, lab),
            _ => Ok(()),
        }
    }

    /// The v2 controllers to switch on for instances, `io` only when one has an I/O limit: the
    /// io controller has a cost on every request of a disk once it is on for a cgroup, and
    /// nothing else needs it.
    fn enabled(&self, io: bool) -> Vec<String> {
        self.controllers
            .iter()
            .filter(|c| io || *c != "io")
            .cloned()
            .collect()
    }

    /// Create the cgroup `name` with `limits` applied. It is empty: the instance's first process
    /// joins it by writing to the files of [`Cgroup::join_fds`]. An I/O limit needs
    /// [`Hierarchy::create_on`], which names the disk.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        self.create_on(name, limits, None)
    }

    /// [`Hierarchy::create`], with the I/O limit (if any) on `disk`.
    pub fn create_on(
        &self,
        name: &str,
        limits: &Limits,
        disk: Option<&BlockDevice>,
    ) -> Result<Cgroup, CgroupError> {
        let io = match (limits.io_bps, disk) {
            (Some(_), None) => {
                return Err(CgroupError::NoIoDevice(
                    "no disk was named to apply it to".into(),
                ))
            }
            (Some(bps), Some(d)) => Some((bps, d)),
            (None, _) => None,
        };
        if io.is_some() && !self.controllers.iter().any(|c| c == "io" || c == "blkio") {
            return Err(CgroupError::MissingController(match self.version {
                Version::V1 => "blkio",
                Version::V2 => "io",
            }));
        }
        let mut cg = Cgroup {
            version: self.version,
            dirs: Vec::new(),
            oom_notice: None,
            limits: *limits,
            io_disk: io.map(|(_, d)| d.clone()),
        };
        for (controller, base) in &self.bases {
            // On v1 each controller is one more directory to make and to join — tens of µs each,
            // on every start. Memory is always needed (accounting); the others only when a
            // limit asks for them.
            let needed = |c: &str| match c {
                "memory" => true,
                // Made by `Hierarchy::confine_devices`, for the instances that have a policy.
                "devices" => false,
                "pids" => limits.pids.is_some(),
                "blkio" => limits.io_bps.is_some(),
                _ => limits.cpus.is_some(),
            };
            if self.version == Version::V1 && !controller.split(',').any(needed) {
                continue;
            }
            if self.version == Version::V2 {
                v2::prepare_base(base, &self.enabled(io.is_some()))?;
            } else {
                ensure_dir_all(base)?;
            }
            let dir = base.join(name);
            fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))?;
            cg.dirs.push((controller.clone(), dir));
        }
        // If a limit cannot be set, `cg` is dropped here and removes what was made.
        match self.version {
            Version::V1 => v1::apply(&cg, limits, io)?,
            Version::V2 => v2::apply(&cg, limits, io)?,
        }
        if self.version == Version::V1 && limits.memory_bytes.is_some() {
            if let Some(dir) = cg.dir("memory") {
                cg.oom_notice = Some(v1::OomNotice::register(dir)?);
            }
        }
        Ok(cg)
    }

    /// [`Hierarchy::create_on`], and on v1 the instance's directory in **every** mounted
    /// hierarchy too, for a container runtime that places its container in each hierarchy it
    /// knows. The runtime is started in all of them ([`Cgroup::placement`]), so its own cgroup
    /// is the instance's everywhere and its container goes below it (see
    /// [`isolab_backends::oci`]). On v2 there is one tree: the same as `create_on`.
    pub fn create_everywhere(
        &self,
        name: &str,
        limits: &Limits,
        disk: Option<&BlockDevice>,
    ) -> Result<Cgroup, CgroupError> {
        let mut cg = self.create_on(name, limits, disk)?;
        if self.version == Version::V1 {
            for (label, base) in self.bases.iter().chain(&self.elsewhere) {
                if cg.dirs.iter().any(|(l, _)| l == label) {
                    continue;
                }
                ensure_dir_all(base)?;
                let dir = base.join(name);
                fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))?;
                cg.dirs.push((label.clone(), dir.clone()));
                fill_cpuset(&dir)?;
            }
        }
        Ok(cg)
    }
}

impl Hierarchy {
    /// An empty cgroup `name` (no limits) at **one path** in every hierarchy: the lab's path in
    /// the memory hierarchy, `<memory base>/<name>`, made in each of the others too. For a
    /// runtime that can be given a single absolute path for all of them — Docker's
    /// `--cgroup-parent`, which its daemon hands runc as a path from each hierarchy's root —
    /// so that its container is below the instance everywhere. Where the lab sits elsewhere in
    /// another hierarchy, this is outside the lab's own cgroup there. On v2, [`Hierarchy::create`].
    /// The lab claims this path in every hierarchy when it starts (see [`isolab_backends::lab`]).
    pub fn create_at_one_path(&self, name: &str) -> Result<Cgroup, CgroupError> {
        if self.version == Version::V2 {
            return self.create(name, &Limits::default());
        }
        let relative = self
            .lab_relative_path()
            .ok_or(CgroupError::MissingController("memory"))?;
        let relative = relative.to_string_lossy().into_owned();
        let mounts = parse_mounts(&read_mountinfo());
        let mut cg = Cgroup {
            version: self.version,
            dirs: Vec::new(),
            oom_notice: None,
            limits: Limits::default(),
            io_disk: None,
        };
        for (label, base) in self.bases.iter().chain(&self.elsewhere) {
            let Some(mount) = mounts
                .iter()
                .filter(|m| base.starts_with(&m.mount_point))
                .max_by_key(|m| m.mount_point.as_os_str().len())
            else {
                continue;
            };
            let parent = host_dir(mount, &relative);
            ensure_dir_all(&parent)?;
            let dir = parent.join(name);
            fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))?;
            // Pushed before it is filled: if that fails, dropping `cg` removes it.
            cg.dirs.push((label.clone(), dir.clone()));
            fill_cpuset(&dir)?;
        }
        Ok(cg)
    }
}

/// A v1 `cpuset` cgroup starts with no CPUs and no memory nodes, and the kernel refuses to
/// move a process into it until it has some (ENOSPC): give `dir`, and its new parents first,
/// their parent's. Elsewhere (no `cpuset.cpus`) nothing to do.
fn fill_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let cpus = dir.join("cpuset.cpus");
    let empty = fs::read_to_string(&cpus).is_ok_and(|c| c.trim().is_empty());
    if !empty {
        return Ok(());
    }
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    fill_cpuset(parent)?;
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let value = read_to_string(&parent.join(file))?;
        write(&dir.join(file), value.trim())?;
    }
    Ok(())
}

/// One instance's cgroup (one directory on v2, one per controller on v1). Dropping it kills every
/// process left inside and removes the directories.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    dirs: Vec<(String, PathBuf)>,
    /// v1 with a memory limit: the kernel's notice of each time the limit ran out
    /// ([`v1::OomNotice`] says why counting kills is not enough there).
    oom_notice: Option<v1::OomNotice>,
    /// The limits written into it, and the disk its I/O limit is on.
    limits: Limits,
    io_disk: Option<BlockDevice>,
}

impl Cgroup {
    /// The directory of `controller` (v1) or the cgroup's only directory (v2).
    fn dir(&self, controller: &str) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Version::V1 => self
                .dirs
                .iter()
                .find(|(label, _)| label.split(',').any(|c| c == controller))
                .map(|(_, d)| d.as_path()),
        }
    }

    /// The cgroup interface it lives in.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The limits written into the cgroup, and the disk its I/O limit throttles: what the
    /// instance's processes must be found under ([`in_force::verify`]).
    pub fn limits(&self) -> (Limits, Option<&BlockDevice>) {
        (self.limits, self.io_disk.as_ref())
    }

    /// The directory of the memory controller (v1) or the cgroup's only directory (v2): where
    /// a container runtime writes the memory limit.
    pub fn memory_dir(&self) -> Option<&Path> {
        self.dir("memory")
    }

    /// The cgroup's directories, for tests and for `lab doctor`.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|(_, d)| d.as_path())
    }

    /// The path of the cgroup relative to its controller's mount, as an OCI runtime wants it in
    /// `linux.cgroupsPath`.
    pub fn relative_path(&self) -> Option<String> {
        relative_to_mount(self.dir("memory")?)
    }

    /// Open the file through which the instance's first process moves itself into the cgroup,
    /// by writing `0` ("me") right after it is created and before it does anything else. Opened
    /// by the parent so the child needs no path handling and no allocation.
    ///
    /// Why not simply `cgroup.procs`? Moving a whole process takes the kernel's global
    /// `cgroup_threadgroup_rwsem` for writing, and the writer of that per-CPU semaphore waits for
    /// an RCU grace period unless another writer came by moments ago: a stall of several
    /// milliseconds on a quiet machine. Moving *one thread, the caller itself* needs no such
    /// lock. The new process has a single thread, so on v1 writing `0` to `tasks` moves all of
    /// it, without the stall. (v2 allows per-thread moves only in threaded subtrees, so there
    /// `cgroup.procs` it is.)
    pub fn join_fds(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .map(|(label, d)| {
                // A hybrid machine's cgroup2 tree ([`Hierarchy::create_everywhere`]) has no
                // `tasks`: a process joins it whole.
                let file = match self.version {
                    Version::V1 if label != "cgroup2" => "tasks",
                    _ => "cgroup.procs",
                };
                let path = d.join(file);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(CgroupError::io("open", &path))
            })
            .collect()
    }

    /// How a new process gets into this cgroup from birth (see [`placement`]): on v2
    /// the cgroup's directory, for `clone3(CLONE_INTO_CGROUP)`, which creates the process inside
    /// it with no migration at all; and the [`Cgroup::join_fds`] as the fallback for kernels
    /// without it, and for v1.
    pub fn placement(&self) -> Result<Placement, CgroupError> {
        let into = match (self.version, self.dirs.first()) {
            (Version::V2, Some((_, dir))) => Some(
                fs::File::open(dir)
                    .map(OwnedFd::from)
                    .map_err(CgroupError::io("open", dir))?,
            ),
            _ => None,
        };
        Ok(Placement {
            into,
            join: self.join_fds()?,
        })
    }

    /// Move process `pid` into the cgroup (for runtimes that fork their own processes).
    pub fn add(&self, pid: Pid) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Current and peak memory charge.
    pub fn memory(&self) -> Option<MemoryReading> {
        let dir = self.dir("memory")?;
        match self.version {
            Version::V1 => v1::memory(dir),
            Version::V2 => v2::memory(dir),
        }
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup or of one below
    /// it (a runtime's container cgroup, `<instance>/ctr`). v2's `memory.events` already counts
    /// the whole subtree; v1 counts a kill only in the cgroup of the process killed, so there the
    /// subtree is added up — and, as a runtime may already have removed its cgroup, the times
    /// the instance's limit ran out are counted too.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.dir("memory") else {
            return 0;
        };
        match self.version {
            Version::V1 => {
                let kills: u64 = subtree(dir).iter().map(|d| v1::oom_kills(d)).sum();
                kills.max(self.oom_notice.as_ref().map_or(0, v1::OomNotice::count))
            }
            Version::V2 => v2::oom_kills(dir),
        }
    }

    /// How many times a fork or a new thread was refused because the cgroup had reached its
    /// `pids.max` (the `max` count of `pids.events`, the same file on v1 and v2). The process
    /// that was refused only sees EAGAIN, which says nothing about limits: this says why.
    ///
    /// The kernel counts a refusal in the cgroup of the process that was refused — a runtime's
    /// container cgroup below the instance's, say — in `pids.events` (v1, and v2 before Linux
    /// 6.13) or `pids.events.local` (v2 since, whose `pids.events` counts it in the cgroup whose
    /// limit refused it and in every one above). Each refusal is counted once by adding up the
    /// local counts of the instance's subtree.
    pub fn pids_limit_hits(&self) -> u64 {
        let local = |d: &Path| {
            keyed_u64(&d.join("pids.events.local"), "max")
                .or_else(|| keyed_u64(&d.join("pids.events"), "max"))
                .unwrap_or(0)
        };
        self.dir("pids")
            .map_or(0, |dir| subtree(dir).iter().map(|d| local(d)).sum())
    }

    /// CPU time used by the cgroup's processes, in nanoseconds, where the kernel reports it.
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match self.version {
            Version::V1 => v1::cpu_usage_ns(self.dir("cpuacct")?),
            Version::V2 => v2::cpu_usage_ns(self.dir("cpu")?),
        }
    }

    /// The processes in the cgroup and in the cgroups below it (a runtime such as Docker may
    /// put its container in a child cgroup of the instance's: `--cgroup-parent`).
    pub fn pids(&self) -> Vec<Pid> {
        let dirs: Vec<PathBuf> = self.dirs.iter().flat_map(|(_, d)| subtree(d)).collect();
        procs_below(&dirs)
    }

    /// SIGKILL every process in the cgroup, until it is empty or `timeout` passes.
    ///
    /// v2 has `cgroup.kill`, which kills the whole subtree atomically. v1 does not: there we read
    /// `cgroup.procs` and kill what we find, again and again, because a process may fork between
    /// the read and the kill (the `pids` limit bounds how long that can go on).
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupError> {
        if self.version == Version::V2 {
            if let Some(dir) = self.dirs.first().map(|(_, d)| d) {
                let _ = fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        kill_until_empty(|| self.pids(), timeout)
            .map(drop)
            .map_err(|()| CgroupError::Busy(self.dirs[0].1.clone()))
    }

    /// Kill what is left and remove the directories.
    pub fn destroy(mut self) -> Result<(), CgroupError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), CgroupError> {
        if self.dirs.is_empty() {
            return Ok(());
        }
        let killed = self.kill_all(Duration::from_secs(5));
        let mut result = killed;
        for (_, dir) in std::mem::take(&mut self.dirs) {
            if let Err(e) = remove_subtree(&dir) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// On a hybrid machine — controllers in v1 hierarchies, and a cgroup2 tree mounted beside them
/// (systemd's `/sys/fs/cgroup/unified`) — where that cgroup2 tree is mounted.
pub fn unified_beside_v1() -> Option<PathBuf> {
    let mounts = parse_mounts(&fs::read_to_string("/proc/self/mountinfo").ok()?);
    let v1 = mounts.iter().any(|m| m.fs_type == "cgroup");
    v1.then(|| {
        mounts
            .iter()
            .find(|m| m.fs_type == "cgroup2")
            .map(|m| m.mount_point.clone())
    })
    .flatten()
}

/// Every cgroup v1 hierarchy mounted here: its mount point, and the options that mount it
/// again — its controllers (`pids`, `cpu,cpuacct`), its name (`name=systemd`) and the flags
/// its superblock was made with (`xattr`, `clone_children`, ...), without `rw` and without a
/// `release_agent`, which may not be set from inside a cgroup namespace. A v1 hierarchy
/// exists once in the kernel: mounting it again, with the options it has, shows the same tree.
pub fn v1_mounts() -> Vec<(PathBuf, String)> {
    parse_mounts(&read_mountinfo())
        .into_iter()
        .filter(|m| m.fs_type == "cgroup")
        .map(|m| {
            let options: Vec<&str> = m
                .controllers
                .iter()
                .map(String::as_str)
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
                .collect();
            (m.mount_point, options.join(","))
        })
        .collect()
}

/// SIGKILL what `pids` lists until it lists nothing, or `timeout` passes. Returns how many
/// processes were signalled. A process may fork between the read and the kill, hence the loop
/// (the `pids` limit bounds how long that can go on).
fn kill_until_empty(pids: impl Fn() -> Vec<Pid>, timeout: Duration) -> Result<usize, ()> {
    let deadline = isolab_host::clock::deadline(timeout);
    let mut killed = 0;
    loop {
        let now = pids();
        if now.is_empty() {
            return Ok(killed);
        }
        for pid in now {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        if Instant::now() > deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The processes of the cgroups `dirs` (not of those below them).
fn procs_below(dirs: &[PathBuf]) -> Vec<Pid> {
    let mut pids: Vec<Pid> = dirs
        .iter()
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .map(Pid::from_raw)
        .collect();
    pids.sort();
    pids.dedup();
    pids
}

/// `dir` and every directory below it, deepest first (the order they can be removed in).
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                // file_type does not follow symbolic links (cgroupfs has none anyway).
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Kill every process in the cgroup `dir` and below, then remove the directories, deepest first.
/// Returns what was removed, in words; an error says what could not be.
///
/// How the processes are killed depends on what the hierarchy offers:
/// * v2 has `cgroup.kill`, which kills the whole subtree at once, forks included;
/// * a v1 hierarchy with the freezer controller is **frozen** first: a frozen process cannot
///   fork, so one pass of SIGKILL reaches every process, which die when thawed;
/// * elsewhere (v1 memory, pids, ...) the processes are killed until none is left.
pub fn remove_tree(dir: &Path) -> Result<Vec<String>, String> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let dirs = subtree(dir);
    // A rootless lab lives in a cgroup it made (see [`v2`]): it must not kill itself there.
    let me = Pid::this();
    if procs_below(&dirs).contains(&me) {
        return Err(format!(
            "cgroup {} holds this lab itself; the next lab removes it",
            dir.display()
        ));
    }
    let freezer = dir.join("freezer.state");
    let mut killed = 0;
    if dir.join("cgroup.kill").exists() {
        let _ = fs::write(dir.join("cgroup.kill"), "1");
    } else if freezer.exists() && fs::write(&freezer, "FROZEN").is_ok() {
        // Freezing takes a moment; FREEZING means some task has not stopped yet.
        let deadline = isolab_host::clock::deadline(Duration::from_secs(1));
        while fs::read_to_string(&freezer).is_ok_and(|s| s.trim() != "FROZEN")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        for pid in procs_below(&dirs) {
            if kill(pid, Signal::SIGKILL).is_ok() {
                killed += 1;
            }
        }
        let _ = fs::write(&freezer, "THAWED");
    }
    killed += kill_until_empty(|| procs_below(&dirs), Duration::from_secs(5))
        .map_err(|()| format!("cgroup {} still has processes after SIGKILL", dir.display()))?;
    remove_subtree(dir).map_err(|e| e.to_string())?;
    Ok(vec![if killed > 0 {
        format!(
            "removed cgroup {} (killed {killed} processes)",
            dir.display()
        )
    } else {
        format!("removed cgroup {}", dir.display())
    }])
}

/// Remove the cgroup `relative` (a path from a hierarchy's root, as runtimes take it) and what
/// is below it, in **every** mounted hierarchy, killing what still runs there (see
/// [`remove_tree`]). A runtime given a cgroup path or parent makes its directories in every
/// controller it knows (`blkio`, `devices`, `freezer`, ... on v1), not only in those the lab
/// uses. Returns what was removed; an error says what could not be.
pub fn remove_everywhere(relative: &Path) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for dir in in_every_hierarchy(relative) {
        match remove_tree(&dir) {
            Ok(r) => removed.extend(r),
            Err(e) => failed.push(e),
        }
    }
    if failed.is_empty() {
        Ok(removed)
    } else {
        Err(failed.join("; "))
    }
}

/// `relative` (a path from a hierarchy's root) in every cgroup hierarchy mounted here where it
/// exists.
pub fn in_every_hierarchy(relative: &Path) -> Vec<PathBuf> {
    let rel = relative.to_string_lossy();
    parse_mounts(&read_mountinfo())
        .iter()
        .map(|m| host_dir(m, &rel))
        .filter(|d| d.is_dir())
        .collect()
}

/// True when `path` lies inside (not at) a cgroup file system mounted here.
pub fn is_cgroup_dir(path: &Path) -> bool {
    parse_mounts(&read_mountinfo())
        .iter()
        .any(|m| path.starts_with(&m.mount_point) && path != m.mount_point)
}

/// `dir` (inside a cgroup mount) as a path from its hierarchy's root.
fn relative_to_mount(dir: &Path) -> Option<String> {
    parse_mounts(&read_mountinfo())
        .into_iter()
        .filter(|m| dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .and_then(|m| {
            let rel = dir.strip_prefix(&m.mount_point).ok()?;
            Some(Path::new(&m.root).join(rel).to_string_lossy().into_owned())
        })
}

/// This mount namespace's mount table (empty if /proc is not mounted).
pub(crate) fn read_mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// How long [`remove_subtree`] keeps trying a cgroup that stays busy.
const REMOVE_PATIENCE: Duration = Duration::from_secs(30);

/// rmdir the cgroup `dir` and every cgroup below it, children first (a cgroup with a child cannot
/// be removed), once its processes have been killed.
///
/// rmdir answers EBUSY for a while after the last process was killed, for two kernel reasons:
/// * a process that is *exiting* has left `cgroup.procs` (the kernel skips a thread group with no
///   live thread there) but still counts as a member until `do_exit` reaches `cgroup_exit`, after
///   it has released its memory: a VM's guest RAM or a fork bomb's thousands of processes can take
///   seconds to free on a loaded machine;
/// * a runtime still tearing down (a shim, a sandbox) may make a child cgroup after the subtree
///   was read, or start a process there.
///
/// So each pass reads the subtree again, kills what it finds there, and removes what it can; it
/// gives up after [`REMOVE_PATIENCE`], naming the threads still listed (`tasks` lists exiting
/// threads too).
fn remove_subtree(dir: &Path) -> Result<(), CgroupError> {
    let deadline = isolab_host::clock::deadline(REMOVE_PATIENCE);
    let mut pause = Duration::from_millis(1);
    loop {
        let dirs = subtree(dir);
        let mut busy = None;
        for d in &dirs {
            match fs::remove_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    busy.get_or_insert((d.clone(), e));
                }
                Err(e) => {
                    return Err(CgroupError::Io {
                        action: "remove cgroup",
                        path: d.clone(),
                        source: e,
                    })
                }
            }
        }
        let Some((path, source)) = busy else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let left: Vec<String> = dirs
                .iter()
                .filter_map(|d| fs::read_to_string(d.join("tasks")).ok())
                .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
                .collect();
            return Err(CgroupError::Io {
                action: if left.is_empty() {
                    "remove cgroup (busy, no thread listed)"
                } else {
                    "remove cgroup (threads still exiting there)"
                },
                path,
                source,
            });
        }
        // `tasks` (v1) lists threads, among them those of a process whose leader is already a
        // zombie and so missing from `cgroup.procs`; a signal to any thread reaches its process.
        let threads = dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("tasks")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .map(Pid::from_raw);
        for pid in procs_below(&dirs).into_iter().chain(threads) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// One cgroup mount from /proc/self/mountinfo.
#[derive(Clone, Debug)]
struct Mount {
    /// The path inside the cgroup tree that is mounted (usually `/`).
    root: String,
    mount_point: PathBuf,
    /// `cgroup` or `cgroup2`.
    fs_type: String,
    /// For v1, the controllers this hierarchy carries (from the super options).
    controllers: Vec<String>,
}

/// The cgroup mounts listed in a mountinfo text.
fn parse_mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // Fields: id parent major:minor root mount_point options [optional...] - fstype source super_options
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fs_type = *fields.get(sep + 1)?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            let super_opts = fields.get(sep + 3).copied().unwrap_or("");
            Some(Mount {
                root: unescape_mount(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mount(fields.get(4)?)),
                fs_type: fs_type.to_string(),
                controllers: super_opts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
pub(crate) fn unescape_mount(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our own cgroup path in the hierarchy whose `/proc/self/cgroup` entry matches `pred`.
/// Each line is `hierarchy-id:controllers:path`; v2's line is `0::path`.
fn own_path(own: &str, pred: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        pred(controllers).then(|| path.to_string())
    })
}

/// The host directory of cgroup `path` in a hierarchy mounted at `mount` (whose root may itself
/// be a sub-tree when we run inside a cgroup namespace).
fn host_dir(mount: &Mount, path: &str) -> PathBuf {
    let rel = Path::new(path)
        .strip_prefix(&mount.root)
        .unwrap_or(Path::new(path.trim_start_matches('/')));
    mount
        .mount_point
        .join(rel.to_string_lossy().trim_start_matches('/'))
}

/// [`ensure_dir`], making missing parents too.
fn ensure_dir_all(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                ensure_dir_all(parent)?;
            }
            ensure_dir(dir)
        }
        _ => ensure_dir(dir),
    }
}

fn ensure_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::Io {
            action: "create cgroup",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

fn read_to_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(CgroupError::io("read", path))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(CgroupError::io("write", path))
}

/// Read a file holding one number.
fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line), e.g. memory.events.
fn keyed_u64(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 35 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 35 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
42 35 0:37 /sub /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn mountinfo_yields_cgroup_mounts_with_controllers() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].fs_type, "cgroup2");
        assert!(mounts[2].controllers.contains(&"cpuacct".to_string()));
        assert_eq!(mounts[3].root, "/sub");
    }

    #[test]
    fn host_dir_accounts_for_the_mount_root() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(
            host_dir(&mounts[1], "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(
            host_dir(&mounts[3], "/sub/x"),
            PathBuf::from("/sys/fs/cgroup/pids/x")
        );
    }

    #[test]
    fn own_path_picks_the_matching_hierarchy() {
        let own = "4:memory:/a/b\n2:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(
            own_path(own, |c| c.split(',').any(|c| c == "memory")).as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            own_path(own, |c| c.is_empty()).as_deref(),
            Some("/user.slice")
        );
    }

    /// The library refuses what the command line refuses: a program using isolab directly
    /// gets the same ranges, and no MiB count wraps on its way to bytes.
    #[test]
    fn limits_are_checked_against_the_kernels_ranges() {
        for (mib, pids, cpus, expect) in [
            (Some(17_592_186_044_417), None, None, "--memory-limit"),
            (Some(u64::MAX), None, None, "--memory-limit"),
            (None, Some(MAX_PIDS + 1), None, "--pids-limit"),
            (None, Some(0), None, "--pids-limit"),
            (None, None, Some(0.0005), "--cpu-limit"),
            (None, None, Some(f64::NAN), "--cpu-limit"),
            (None, None, Some(3.0), "--cpu-limit"),
        ] {
            let e = Limits::checked(mib, pids, cpus, None, 2).unwrap_err();
            assert!(e.starts_with(expect) && e.contains("out of range"), "{e}");
        }
        for io in [0, MAX_IO_MIB + 1, u64::MAX] {
            let e = Limits::checked(None, None, None, Some(io), 2).unwrap_err();
            assert!(
                e.starts_with("--io-limit") && e.contains("out of range"),
                "{e}"
            );
        }
        let l = Limits::checked(
            Some(MAX_MEMORY_MIB),
            Some(MAX_PIDS),
            Some(MIN_CPUS),
            Some(MAX_IO_MIB),
            2,
        )
        .unwrap();
        assert_eq!(l.memory_bytes, Some(1 << 40));
        assert_eq!(l.io_bps, Some(1 << 40));
        assert!(Limits::checked(None, None, None, Some(1), 2).unwrap().any());
        assert_eq!(
            cpu_quota_us(MIN_CPUS),
            1_000,
            "the scheduler's smallest quota, 1 ms"
        );
    }

    #[test]
    fn mount_paths_unescape_octal() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
