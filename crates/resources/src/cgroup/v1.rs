//! cgroup v1: one hierarchy per controller (`/sys/fs/cgroup/memory`, `/sys/fs/cgroup/pids`, ...).
//!
//! An instance's cgroup is one directory per hierarchy, all with the same name. The memory
//! hierarchy is required; `pids`, `cpu`, `cpuacct`, `blkio` and `devices` are used where
//! mounted, each only by the instances that need it (`devices`: a container's device policy,
//! see [`crate::cgroup::devices`]).

use crate::cgroup::{
    cpu_quota_us, host_dir, keyed_u64, own_path, read_u64, write, BlockDevice, Cgroup, CgroupError,
    Hierarchy, Limits, MemoryReading, Mount, Version, CPU_PERIOD_US,
};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// v1 hierarchies isolab uses; `cpuacct` adds CPU-time accounting to `cpu`'s bandwidth limit,
/// `blkio` is the I/O throttle (v2's `io`), `devices` the device policy (v2: a BPF program).
const V1_CONTROLLERS: [&str; 6] = ["memory", "pids", "cpu", "cpuacct", "blkio", "devices"];

pub(super) fn detect(mounts: &[Mount], own: &str) -> Result<Hierarchy, CgroupError> {
    let mut bases: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut controllers = Vec::new();
    for controller in V1_CONTROLLERS {
        let Some(mount) = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let has = |c: &str| c.split(',').any(|c| c == controller);
        let Some(path) = own_path(own, has) else {
            continue;
        };
        controllers.push(controller.to_string());
        let base = host_dir(mount, &path).join("isolab");
        // cpu and cpuacct are often mounted together ("cpu,cpuacct"): one directory serves both.
        match bases.iter_mut().find(|(_, b)| *b == base) {
            Some((label, _)) => {
                label.push(',');
                label.push_str(controller);
            }
            None => bases.push((controller.to_string(), base)),
        }
    }
    if !controllers.iter().any(|c| c == "memory") {
        return Err(CgroupError::NotMounted);
    }
    let elsewhere = other_hierarchies(mounts, own);
    let hybrid = mounts.iter().any(|m| m.fs_type == "cgroup2");
    Ok(Hierarchy {
        version: Version::V1,
        description: format!(
            "v1{} (controllers: {})",
            if hybrid { " hybrid" } else { "" },
            controllers.join(", ")
        ),
        bases,
        controllers,
        elsewhere,
        delegated: None,
        lab: None,
        device_program: Default::default(),
    })
}

/// `<our own cgroup>/isolab` in every mounted hierarchy the lab sets no limit in, labelled by
/// its controllers: each line of `/proc/self/cgroup` (`id:controllers:path`) names one
/// hierarchy and where we are in it, which may differ from hierarchy to hierarchy. The cgroup2
/// tree of a hybrid machine is one of them (`0::path`, labelled `cgroup2`).
fn other_hierarchies(mounts: &[Mount], own: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let names: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
        if names.iter().any(|c| V1_CONTROLLERS.contains(c)) {
            continue;
        }
        let mount = if names.is_empty() {
            mounts.iter().find(|m| m.fs_type == "cgroup2")
        } else {
            mounts.iter().find(|m| {
                m.fs_type == "cgroup" && names.iter().all(|n| m.controllers.iter().any(|c| c == n))
            })
        };
        let Some(mount) = mount else { continue };
        let base = host_dir(mount, path).join("isolab");
        if !out.iter().any(|(_, b)| *b == base) {
            let label = if names.is_empty() {
                "cgroup2".into()
            } else {
                list.to_string()
            };
            out.push((label, base));
        }
    }
    out
}

pub(super) fn apply(
    cg: &Cgroup,
    limits: &Limits,
    io: Option<(u64, &BlockDevice)>,
) -> Result<(), CgroupError> {
    if let Some(bytes) = limits.memory_bytes {
        let dir = required(cg, "memory")?;
        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
        // memory+swap limit equal to the memory limit: the instance may not swap, so going over
        // the limit means the OOM killer, not a slow crawl. (Absent when swap accounting is off.)
        // Only needed when the host has swap; skipping it saves a slow write on every start.
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if isolab_host::facts::has_swap() && memsw.exists() {
            write(&memsw, &bytes.to_string())?;
        }
    }
    if let Some(pids) = limits.pids {
        write(&required(cg, "pids")?.join("pids.max"), &pids.to_string())?;
    }
    if let Some(cpus) = limits.cpus {
        // CFS bandwidth: `quota` µs of CPU time per `period` µs of wall time.
        let dir = required(cg, "cpu")?;
        write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write(
            &dir.join("cpu.cfs_quota_us"),
            &cpu_quota_us(cpus).to_string(),
        )?;
    }
    if let Some((bps, disk)) = io {
        // The throttle: a budget of `bps` bytes per second for the requests this cgroup's
        // tasks send to `disk`; a request over budget waits in the throttle's queue until the
        // budget has refilled. v1 sees only the I/O a task issues itself — reads, and direct
        // writes like the disk kernels' O_DIRECT. A buffered write is issued later by the
        // kernel's writeback threads, charged to the root cgroup, and escapes v1's throttle
        // (v2's io controller follows the dirty pages to their owner).
        let dir = required(cg, "blkio")?;
        let rule = format!("{}:{} {bps}", disk.major, disk.minor);
        write(&dir.join("blkio.throttle.read_bps_device"), &rule)?;
        write(&dir.join("blkio.throttle.write_bps_device"), &rule)?;
    }
    Ok(())
}

fn required<'a>(cg: &'a Cgroup, controller: &'static str) -> Result<&'a Path, CgroupError> {
    cg.dir(controller)
        .ok_or(CgroupError::MissingController(controller))
}

pub(super) fn memory(dir: &Path) -> Option<MemoryReading> {
    let stat = dir.join("memory.stat");
    Some(MemoryReading {
        current_bytes: read_u64(&dir.join("memory.usage_in_bytes"))?,
        peak_bytes: read_u64(&dir.join("memory.max_usage_in_bytes")),
        anon_bytes: keyed_u64(&stat, "total_rss"),
        file_bytes: keyed_u64(&stat, "total_cache"),
        kernel_bytes: read_u64(&dir.join("memory.kmem.usage_in_bytes")),
    })
}

/// v1's notice of an out-of-memory event: an eventfd the kernel signals each time the cgroup it
/// is registered on runs out of memory under its limit and calls the OOM killer.
///
/// v1 counts an OOM kill (`oom_kill` in `memory.oom_control`) only in the cgroup of the process
/// it killed. A runtime such as runc puts its container in a cgroup of its own below the
/// instance's and removes that cgroup the moment the container exits — with the count, before
/// the lab can read it. The limit, though, is the instance cgroup's, and it is that cgroup that
/// runs out: a notice registered there (through `cgroup.event_control`, v1's interface for
/// memory events; see the kernel's `Documentation/admin-guide/cgroup-v1/memory.rst`, "OOM
/// Control") is signalled whoever in its subtree was killed. v2 needs none of this: its
/// `memory.events` counts the whole subtree.
#[derive(Debug)]
pub(super) struct OomNotice {
    eventfd: EventFd,
    /// Signals seen so far (reading an eventfd resets it).
    seen: AtomicU64,
}

impl OomNotice {
    /// Listen for out-of-memory events of the memory cgroup `dir`.
    pub(super) fn register(dir: &Path) -> Result<OomNotice, CgroupError> {
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| CgroupError::io("create an eventfd for", dir)(e.into()))?;
        let control = dir.join("memory.oom_control");
        let file = std::fs::File::open(&control).map_err(CgroupError::io("open", &control))?;
        // "<eventfd> <fd of the file to watch>": the kernel looks both up in this process's
        // table while handling the write, then holds the eventfd; the watched file may close.
        write(
            &dir.join("cgroup.event_control"),
            &format!(
                "{} {}",
                eventfd.as_fd().as_raw_fd(),
                file.as_fd().as_raw_fd()
            ),
        )?;
        Ok(OomNotice {
            eventfd,
            seen: AtomicU64::new(0),
        })
    }

    /// How many times the cgroup has run out of memory since the notice was registered. Read
    /// it before the cgroup is removed: removing it signals the eventfd once more.
    pub(super) fn count(&self) -> u64 {
        // EAGAIN: nothing new (the eventfd is non-blocking).
        let new = self.eventfd.read().unwrap_or(0);
        self.seen.fetch_add(new, Ordering::Relaxed) + new
    }
}

pub(super) fn oom_kills(dir: &Path) -> u64 {
    keyed_u64(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0)
}

pub(super) fn cpu_usage_ns(dir: &Path) -> Option<u64> {
    read_u64(&dir.join("cpuacct.usage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the lab is in each hierarchy is read line by line: the hierarchies it sets no limit
    /// in, and a hybrid machine's cgroup2 tree, each get a base at the lab's own place there.
    #[test]
    fn every_other_hierarchy_gets_a_base_where_the_lab_is_in_it() {
        let mountinfo = "\
36 35 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
40 35 0:35 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 35 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
42 35 0:37 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
43 35 0:38 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
";
        let own = "9:name=systemd:/s\n5:devices:/d\n4:memory:/m\n3:cpu,cpuacct:/\n0::/u\n";
        let mounts = crate::cgroup::parse_mounts(mountinfo);
        let h = detect(&mounts, own).unwrap();
        let base = |p: &str| PathBuf::from(p);
        assert_eq!(
            h.elsewhere,
            [
                (
                    "name=systemd".into(),
                    base("/sys/fs/cgroup/systemd/s/isolab")
                ),
                ("cgroup2".into(), base("/sys/fs/cgroup/unified/u/isolab")),
            ]
        );
        assert_eq!(
            h.bases().collect::<Vec<_>>(),
            [
                Path::new("/sys/fs/cgroup/memory/m/isolab"),
                Path::new("/sys/fs/cgroup/cpu,cpuacct/isolab"),
                // The device policy's hierarchy is one the lab uses (see `devices.rs`).
                Path::new("/sys/fs/cgroup/devices/d/isolab")
            ]
        );
        // The lab's own directories, claimed before use, are in every hierarchy.
        assert_eq!(h.for_lab("0123456789ab").lab_dirs().len(), 5);
    }
}
