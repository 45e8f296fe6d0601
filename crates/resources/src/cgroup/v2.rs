//! cgroup v2: one unified tree; a cgroup's controllers are switched on by its parent's
//! `cgroup.subtree_control`.
//!
//! v2's "no internal processes" rule shapes where isolab puts its cgroups: a cgroup that enables
//! controllers for its children may not itself hold processes (the root is exempt). So instance
//! cgroups live under `isolab/<lab id>/`, which hold none, and when the lab is not root and
//! must use its own (delegated) cgroup, it first moves itself into a leaf beside them,
//! `lab-<lab id>`. A process cannot remove the cgroup it is in, so that leaf outlives the lab that
//! made it by a moment: the lab claims it in its ledger ([`crate::ownership`]) and the next lab
//! removes it.

use crate::cgroup::{
    cpu_quota_us, ensure_dir, host_dir, keyed_u64, own_path, read_u64, write, BlockDevice, Cgroup,
    CgroupError, Hierarchy, Limits, MemoryReading, Mount, Version, CONTROLLERS, CPU_PERIOD_US,
};
use std::fs;
use std::path::{Path, PathBuf};

pub(super) fn detect(mounts: &[Mount], own: &str) -> Result<Option<Hierarchy>, CgroupError> {
    let Some(mount) = mounts.iter().find(|m| m.fs_type == "cgroup2") else {
        return Ok(None);
    };
    let available = controllers_of(&mount.mount_point);
    if !available.iter().any(|c| c == "memory") {
        // A "hybrid" machine: the unified tree exists but the memory controller lives in v1.
        return Ok(None);
    }
    if nix::unistd::geteuid().is_root() {
        let root = mount.mount_point.clone();
        return Ok(Some(at(root.join("isolab"), &controllers_of(&root))));
    }
    let own = own_path(own, str::is_empty).unwrap_or_else(|| "/".into());
    let mut h = delegated(host_dir(mount, &own));
    h.description = format!(
        "v2 delegated to this user at {} (controllers: {})",
        own,
        h.controllers.join(", ")
    );
    Ok(Some(h))
}

/// The hierarchy of a non-root lab in the delegated cgroup `own`.
pub(super) fn delegated(own: PathBuf) -> Hierarchy {
    let mut h = at(own.join("isolab"), &controllers_of(&own));
    h.delegated = Some(own);
    h
}

/// A v2 hierarchy whose instance cgroups live under `base`, with `controllers` usable there.
pub(super) fn at(base: PathBuf, controllers: &[String]) -> Hierarchy {
    let controllers: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| controllers.iter().any(|a| a == *c))
        .map(|c| c.to_string())
        .collect();
    Hierarchy {
        version: Version::V2,
        description: format!("v2 (controllers: {})", controllers.join(", ")),
        bases: vec![("".into(), base)],
        controllers,
        elsewhere: Vec::new(),
        delegated: None,
        lab: None,
        device_program: Default::default(),
    }
}

/// Controllers a cgroup offers its children (`cgroup.controllers`).
fn controllers_of(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The leaf a non-root lab moves itself into, in its delegated cgroup `own`.
pub(super) fn leaf(own: &Path, lab: &str) -> PathBuf {
    own.join(format!("lab-{lab}"))
}

/// For a non-root lab in a delegated cgroup `own`: move the lab into `own/lab-<lab id>` so that
/// `own` holds no processes and may enable controllers for its children.
pub(super) fn enter_leaf(own: &Path, lab: &str) -> Result<(), CgroupError> {
    let leaf = leaf(own, lab);
    ensure_dir(&leaf)?;
    write(&leaf.join("cgroup.procs"), "0")
}

/// Make `base` (`…/isolab/<lab id>`) exist with our controllers enabled in it and in the two
/// cgroups above it: each level offers its children only what its own parent enabled.
pub(super) fn prepare_base(base: &Path, controllers: &[String]) -> Result<(), CgroupError> {
    let parent = base.parent().unwrap_or(base);
    ensure_dir(parent)?;
    ensure_dir(base)?;
    let enable: String = controllers.iter().map(|c| format!("+{c} ")).collect();
    for dir in [parent.parent().unwrap_or(parent), parent, base] {
        let file = dir.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&file).unwrap_or_default();
        if controllers
            .iter()
            .all(|c| enabled.split_whitespace().any(|e| e == c))
        {
            continue;
        }
        write(&file, enable.trim_end())?;
    }
    Ok(())
}

pub(super) fn apply(
    cg: &Cgroup,
    limits: &Limits,
    io: Option<(u64, &BlockDevice)>,
) -> Result<(), CgroupError> {
    let dir = cg.dir("").expect("a v2 cgroup has one directory");
    let has = |file: &str| dir.join(file).exists();
    if let Some(bytes) = limits.memory_bytes {
        require(has("memory.max"), "memory")?;
        write(&dir.join("memory.max"), &bytes.to_string())?;
        // No swap for the instance: over the limit means the OOM killer, not a slow crawl.
        if isolab_host::facts::has_swap() && has("memory.swap.max") {
            write(&dir.join("memory.swap.max"), "0")?;
        }
    }
    if let Some(pids) = limits.pids {
        require(has("pids.max"), "pids")?;
        write(&dir.join("pids.max"), &pids.to_string())?;
    }
    if let Some(cpus) = limits.cpus {
        // CFS bandwidth: "quota period" in µs of CPU time per µs of wall time.
        require(has("cpu.max"), "cpu")?;
        write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", cpu_quota_us(cpus)),
        )?;
    }
    if let Some((bps, disk)) = io {
        // One line per disk: bytes per second for reads and for writes. The io controller
        // throttles the requests of this cgroup's tasks — and, unlike v1, the writeback of the
        // pages they dirtied, which v2 charges to the cgroup that owns them.
        require(has("io.max"), "io")?;
        write(
            &dir.join("io.max"),
            &format!("{}:{} rbps={bps} wbps={bps}", disk.major, disk.minor),
        )?;
    }
    Ok(())
}

fn require(present: bool, controller: &'static str) -> Result<(), CgroupError> {
    present
        .then_some(())
        .ok_or(CgroupError::MissingController(controller))
}

pub(super) fn memory(dir: &Path) -> Option<MemoryReading> {
    let stat = dir.join("memory.stat");
    // memory.stat has a `kernel` total since Linux 5.18; before, add up its parts.
    let kernel = keyed_u64(&stat, "kernel").or_else(|| {
        let parts: Vec<u64> = [
            "kernel_stack",
            "pagetables",
            "sec_pagetables",
            "percpu",
            "sock",
            "vmalloc",
            "slab",
        ]
        .iter()
        .filter_map(|k| keyed_u64(&stat, k))
        .collect();
        (!parts.is_empty()).then(|| parts.iter().sum())
    });
    Some(MemoryReading {
        current_bytes: read_u64(&dir.join("memory.current"))?,
        // memory.peak appeared in Linux 5.19.
        peak_bytes: read_u64(&dir.join("memory.peak")),
        anon_bytes: keyed_u64(&stat, "anon"),
        file_bytes: keyed_u64(&stat, "file"),
        kernel_bytes: kernel,
    })
}

pub(super) fn oom_kills(dir: &Path) -> u64 {
    keyed_u64(&dir.join("memory.events"), "oom_kill").unwrap_or(0)
}

pub(super) fn cpu_usage_ns(dir: &Path) -> Option<u64> {
    keyed_u64(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000)
}
