//! Limits in force: what the kernel really applies to a process, read back from the process's
//! own `/proc/PID/cgroup`.
//!
//! Writing `pids.max` into a cgroup limits the processes *in that cgroup and below it*, nothing
//! else. Whether an instance's workload is under the limit the lab wrote depends on where the
//! workload lives, and a runtime puts its container where *it* chooses: runc and crun take a
//! `cgroupsPath`, Docker a `--cgroup-parent`, and on cgroup v1 each hierarchy (memory, pids,
//! cpu, ...) is a tree of its own, in which the lab itself may sit at a different place. A
//! limit written in one place and a workload living in another is a limit that does not exist.
//!
//! So the lab does not trust what it wrote. For each process of an instance it reads
//! `/proc/PID/cgroup` — one line per hierarchy, `id:controllers:path` (v2's line is `0::path`) —
//! finds the directory of the process's cgroup in the hierarchy that carries each controller,
//! and walks up from there to the hierarchy's root. A cgroup's limit bounds everything below
//! it, so what is **in force** is the smallest value met on the way up: the process's own
//! cgroup may say `max`, its parent 16.
//!
//! | limit  | v1 file(s), per level                                   | v2 file, per level |
//! |--------|---------------------------------------------------------|--------------------|
//! | memory | `memory.limit_in_bytes`                                 | `memory.max`       |
//! | pids   | `pids.max`                                              | `pids.max`         |
//! | cpu    | `cpu.cfs_quota_us` / `cpu.cfs_period_us`                | `cpu.max`          |
//! | io     | `blkio.throttle.read_bps_device`, `..write_bps_device`  | `io.max`           |

use crate::cgroup::{
    cpu_quota_us, host_dir, parse_mounts, BlockDevice, Limits, Mount, CPU_PERIOD_US,
};
use nix::unistd::Pid;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The limits in force for a set of processes: for each, the loosest value any of them is
/// under (`None`: no limit anywhere up the hierarchy).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InForce {
    /// Bytes of memory.
    pub memory_bytes: Option<u64>,
    /// Tasks (`pids.max`).
    pub pids: Option<u64>,
    /// CPU bandwidth, in cores.
    pub cpus: Option<f64>,
    /// Bytes per second on the instance's disk, reads and writes (the looser of the two).
    pub io_bps: Option<u64>,
    /// Where the values were read: the first process checked and its cgroup in each hierarchy
    /// consulted, e.g. `pid 812: pids:/isolab/3f9a/3f9a-0 memory:/…` — what a student compares
    /// with the path the lab wrote its limits to.
    pub read_from: String,
}

/// One limit the lab asked for, and how to read it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Memory,
    Pids,
    Cpu,
    Io,
}

impl Kind {
    /// The controller's name in a v1 hierarchy and in the v2 tree.
    fn controller(self) -> (&'static str, &'static str) {
        match self {
            Kind::Memory => ("memory", "memory"),
            Kind::Pids => ("pids", "pids"),
            Kind::Cpu => ("cpu", "cpu"),
            Kind::Io => ("blkio", "io"),
        }
    }

    /// The limit's name in messages.
    fn file(self, v2: bool) -> &'static str {
        match (self, v2) {
            (Kind::Memory, false) => "memory.limit_in_bytes",
            (Kind::Memory, true) => "memory.max",
            (Kind::Pids, _) => "pids.max",
            (Kind::Cpu, false) => "cpu.cfs_quota_us",
            (Kind::Cpu, true) => "cpu.max",
            (Kind::Io, false) => "blkio.throttle.*_bps_device",
            (Kind::Io, true) => "io.max",
        }
    }
}

/// A value read at one level of a hierarchy, in a unit that compares: bytes, tasks, bytes per
/// second, or CPU time per period as a fraction (cores). `None`: no limit at that level.
type Value = Option<f64>;

/// The limit of `kind` set in the cgroup directory `dir` (v2 when `v2`), if it sets one.
/// `Err` when the directory cannot be read at all.
fn level(kind: Kind, dir: &Path, v2: bool, disk: Option<&BlockDevice>) -> Result<Value, ()> {
    if dir.is_dir() {
        Ok(limit_in(kind, dir, v2, disk))
    } else {
        Err(())
    }
}

/// The limit of `kind` written in `dir`, if any.
fn limit_in(kind: Kind, dir: &Path, v2: bool, disk: Option<&BlockDevice>) -> Value {
    let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
    let number = |s: &str| s.trim().parse::<f64>().ok();
    match (kind, v2) {
        (Kind::Memory, false) => read("memory.limit_in_bytes")
            .and_then(|s| number(&s))
            // v1 shows "no limit" as the largest page count it can hold, in bytes (just under
            // 2^63): anything that large limits nothing.
            .filter(|&b| b < (1u64 << 62) as f64),
        (Kind::Memory, true) => read("memory.max").and_then(|s| number(&s)),
        (Kind::Pids, _) => read("pids.max").and_then(|s| number(&s)),
        (Kind::Cpu, false) => {
            let quota = read("cpu.cfs_quota_us").and_then(|s| number(&s));
            let period = read("cpu.cfs_period_us").and_then(|s| number(&s));
            match (quota, period) {
                (Some(q), Some(p)) if q >= 0.0 && p > 0.0 => Some(q / p),
                _ => None,
            }
        }
        (Kind::Cpu, true) => read("cpu.max").and_then(|s| {
            let mut f = s.split_whitespace();
            let (q, p) = (number(f.next()?)?, number(f.next()?)?);
            (p > 0.0).then_some(q / p)
        }),
        (Kind::Io, _) => {
            let disk = disk?;
            let device = format!("{}:{}", disk.major, disk.minor);
            if v2 {
                // "8:0 rbps=4194304 wbps=4194304 riops=max wiops=max"
                read("io.max").and_then(|s| {
                    let line = s
                        .lines()
                        .find(|l| l.split_whitespace().next() == Some(&device))?;
                    let get = |key: &str| {
                        line.split_whitespace()
                            .find_map(|kv| kv.strip_prefix(key))
                            .and_then(number)
                    };
                    // Both directions must be limited; the looser one is what holds.
                    Some(get("rbps=")?.max(get("wbps=")?))
                })
            } else {
                // One file per direction, "8:0 4194304" per throttled disk.
                let rule = |file: &str| {
                    read(file).and_then(|s| {
                        s.lines().find_map(|l| {
                            let (dev, bps) = l.split_once(' ')?;
                            (dev == device).then(|| number(bps))?
                        })
                    })
                };
                let r = rule("blkio.throttle.read_bps_device");
                let w = rule("blkio.throttle.write_bps_device");
                Some(r?.max(w?))
            }
        }
    }
}

/// The smaller of two values, where `None` is no limit.
fn tighter(a: Value, b: Value) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The hierarchy that carries `kind` for a process whose `/proc/PID/cgroup` is `lines`: its
/// mount, whether it is v2, and the process's cgroup path in it.
fn locate<'a>(
    kind: Kind,
    mounts: &'a [Mount],
    lines: &[(Vec<String>, String)],
) -> Option<(&'a Mount, bool, String)> {
    let (v1, v2) = kind.controller();
    // A controller is in one v1 hierarchy or in the v2 tree, never both at once.
    if let Some(m) = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup" && m.controllers.iter().any(|c| c == v1))
    {
        let (_, path) = lines.iter().find(|(c, _)| c.iter().any(|c| c == v1))?;
        return Some((m, false, path.clone()));
    }
    let m = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
    let offered = fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
    if !offered.split_whitespace().any(|c| c == v2) {
        return None;
    }
    let (_, path) = lines.iter().find(|(c, _)| c.is_empty())?;
    Some((m, true, path.clone()))
}

/// What one process is under for `kind`: the value in force, the file that says so, and the
/// process's cgroup (`controller:path`).
fn in_force(
    kind: Kind,
    mounts: &[Mount],
    lines: &[(Vec<String>, String)],
    disk: Option<&BlockDevice>,
) -> Result<(Value, &'static str, String), String> {
    let (v1, v2name) = kind.controller();
    let Some((mount, v2, path)) = locate(kind, mounts, lines) else {
        return Err(format!("no {v1} hierarchy holds it"));
    };
    let controller = if v2 { v2name } else { v1 };
    let cgroup = format!("{controller}:{path}");
    let mut dir: PathBuf = host_dir(mount, &path);
    // A path outside this namespace's view of the tree (`/../..`) cannot be read: nothing
    // about its limits can be said.
    if path.split('/').any(|c| c == "..") {
        return Err(format!("its cgroup {cgroup} lies outside the lab's view"));
    }
    let mut value = level(kind, &dir, v2, disk)
        .map_err(|()| format!("its cgroup {cgroup} cannot be read ({})", dir.display()))?;
    while dir != mount.mount_point {
        let Some(parent) = dir.parent() else { break };
        dir = parent.to_path_buf();
        value = tighter(value, level(kind, &dir, v2, disk).unwrap_or(None));
    }
    Ok((value, kind.file(v2), cgroup))
}

/// `/proc/PID/cgroup` as (controllers, path) per line; `None` when the process has gone.
fn cgroups_of(pid: Pid) -> Option<Vec<(Vec<String>, String)>> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let controllers = controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                Some((controllers, path.to_string()))
            })
            .collect(),
    )
}

/// True while `pid` exists and is not exiting: `/proc/PID/stat`'s state is not `Z` (a zombie)
/// nor `X` (dead), and its flags lack `PF_EXITING`. The flag matters: `do_exit` sets it first,
/// then moves the task to each hierarchy's root cgroup (`cgroup_exit`) well before the task
/// becomes a zombie, so in between a process killed by its memory limit reads as a running
/// process under no limit.
fn running(pid: Pid) -> bool {
    /// `PF_EXITING` in include/linux/sched.h.
    const PF_EXITING: u64 = 0x4;
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // After the command name (which may hold spaces and parentheses): state, ppid, pgrp,
        // session, tty_nr, tpgid, flags.
        let fields: Vec<&str> = stat
            .rfind(')')
            .map(|i| stat[i + 1..].split_whitespace().take(7).collect())
            .unwrap_or_default();
        let state_alive = fields.first().is_some_and(|s| *s != "Z" && *s != "X");
        let flags = fields.get(6).and_then(|f| f.parse::<u64>().ok());
        state_alive && flags.is_some_and(|f| f & PF_EXITING == 0)
    })
}

/// A value as a message shows it.
fn shown(kind: Kind, value: Value) -> String {
    match (kind, value) {
        (_, None) => "max".into(),
        (Kind::Cpu, Some(c)) => format!("{c:.3} cores"),
        (_, Some(v)) => format!("{}", v as u64),
    }
}

/// Check that every limit of `expected` is in force for every process of `pids` that still
/// exists: the value met on the way up from its cgroup to its hierarchy's root is at most the
/// one asked for (I/O on `disk`). Returns what is in force (the loosest over the processes), or
/// `None` when none of them could be read (they had all ended); the error is one line saying
/// which process is not under which limit, and where it lives.
pub fn verify(
    expected: &Limits,
    disk: Option<&BlockDevice>,
    pids: &[Pid],
) -> Result<Option<InForce>, String> {
    let mounts = parse_mounts(&crate::cgroup::read_mountinfo());
    let asked: Vec<(Kind, f64)> = [
        (Kind::Memory, expected.memory_bytes.map(|b| b as f64)),
        (Kind::Pids, expected.pids.map(|p| p as f64)),
        // What the lab wrote: the quota it computed, in µs, over its period.
        (
            Kind::Cpu,
            expected
                .cpus
                .map(|c| cpu_quota_us(c) as f64 / CPU_PERIOD_US as f64),
        ),
        (Kind::Io, expected.io_bps.map(|b| b as f64)),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .collect();
    let mut found: Option<InForce> = None;
    let mut loosest: BTreeMap<&str, Value> = BTreeMap::new();
    let mut deepest = 0;
    for &pid in pids {
        let Some(lines) = cgroups_of(pid) else {
            continue;
        };
        // A process that is exiting or has exited — a zombie waiting for its parent — has left
        // its cgroups (the kernel shows it in each hierarchy's root): it is under no limit, and
        // needs none.
        // Asked after reading its cgroups, so that one that exits meanwhile is not misread.
        if !running(pid) {
            continue;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let who = format!("pid {pid} ({})", comm.trim());
        let mut places = Vec::new();
        for &(kind, limit) in &asked {
            let (value, file, cgroup) = in_force(kind, &mounts, &lines, disk).map_err(|why| {
                format!("{who}: no {} limit can be read: {why}", kind.controller().0)
            })?;
            // A rounding margin: v1's CPU quota and period are whole µs.
            if value.is_none_or(|v| v > limit * (1.0 + 1e-9)) {
                return Err(format!(
                    "{who} is under {file} {} (the smallest from {cgroup} up to its hierarchy's \
                     root), not the {} asked for",
                    shown(kind, value),
                    shown(kind, Some(limit)),
                ));
            }
            let key = file;
            let entry = loosest.entry(key).or_insert(value);
            *entry = match (*entry, value) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if !places.contains(&cgroup) {
                places.push(cgroup);
            }
            let f = found.get_or_insert_with(InForce::default);
            let v = loosest[key];
            match kind {
                Kind::Memory => f.memory_bytes = v.map(|b| b as u64),
                Kind::Pids => f.pids = v.map(|p| p as u64),
                Kind::Cpu => f.cpus = v,
                Kind::Io => f.io_bps = v.map(|b| b as u64),
            }
        }
        // The process deepest in the trees names where the limits were read: a runtime's
        // container below the instance's cgroup, rather than the runtime in it.
        let depth: usize = places.iter().map(|p| p.matches('/').count()).sum();
        if let Some(f) = found.as_mut() {
            if f.read_from.is_empty() || depth > deepest {
                deepest = depth;
                f.read_from = format!("{who}: {}", places.join(" "));
            }
        }
    }
    Ok(found)
}

/// `root` and every process descended from it, found through the parent PID each process of
/// `/proc` names (`/proc/PID/task/TID/children` needs `CONFIG_PROC_CHILDREN`, which not every
/// kernel has). A runtime's container is its child (runc, crun) or grandchild (runsc's sandbox).
pub fn process_tree(root: Pid) -> Vec<Pid> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for pid in isolab_host::procfs::numbered("/proc") {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut seen = BTreeSet::from([root.as_raw()]);
    let mut stack = vec![root.as_raw()];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if seen.insert(c) {
                stack.push(c);
            }
        }
    }
    seen.into_iter().map(Pid::from_raw).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_of_two_levels_is_in_force() {
        assert_eq!(tighter(None, Some(16.0)), Some(16.0));
        assert_eq!(tighter(Some(8.0), Some(16.0)), Some(8.0));
        assert_eq!(tighter(None, None), None);
    }

    /// Each interface's files, as the kernel writes them, read into one unit per limit.
    #[test]
    fn limit_files_are_read_in_their_units() {
        let dir = std::env::temp_dir().join(format!("isolab-in-force-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let put = |f: &str, v: &str| fs::write(dir.join(f), v).unwrap();
        let disk = BlockDevice {
            major: 8,
            minor: 0,
            name: "sda".into(),
        };
        let read = |k: Kind, v2: bool| limit_in(k, &dir, v2, Some(&disk));
        put("memory.limit_in_bytes", "9223372036854771712\n");
        put("memory.max", "67108864\n");
        put("pids.max", "max\n");
        put("cpu.cfs_quota_us", "50000\n");
        put("cpu.cfs_period_us", "100000\n");
        put("cpu.max", "max 100000\n");
        put("blkio.throttle.read_bps_device", "8:0 4194304\n");
        put("blkio.throttle.write_bps_device", "8:16 1\n8:0 2097152\n");
        put("io.max", "8:0 rbps=1048576 wbps=max riops=max wiops=max\n");
        assert_eq!(read(Kind::Memory, false), None, "v1's unlimited");
        assert_eq!(read(Kind::Memory, true), Some(67108864.0));
        assert_eq!(read(Kind::Pids, false), None);
        assert_eq!(read(Kind::Cpu, false), Some(0.5));
        assert_eq!(read(Kind::Cpu, true), None);
        // Both directions limited: the looser holds.
        assert_eq!(read(Kind::Io, false), Some(4194304.0));
        // Writes unlimited: no I/O limit in force.
        assert_eq!(read(Kind::Io, true), None);
        put("cpu.cfs_quota_us", "-1\n");
        assert_eq!(read(Kind::Cpu, false), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The lab's own process tree holds the lab; a child it starts is found below it.
    #[test]
    fn a_child_is_in_its_parents_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(Pid::this());
        let pid = Pid::from_raw(child.id() as i32);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            tree.contains(&Pid::this()) && tree.contains(&pid),
            "{tree:?}"
        );
    }

    /// A live process is running; the same process once it has exited (a zombie not yet
    /// waited for) is not, although /proc still lists it.
    #[test]
    fn a_zombie_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let zombie = !running(pid) && std::path::Path::new(&format!("/proc/{pid}")).exists();
        child.wait().unwrap();
        assert!(zombie, "pid {pid} still reads as running after it exited");
        assert!(running(Pid::this()));
    }
}
