//! What an instance's processes are doing now: how many tasks, how much CPU time, how many bytes
//! written — read back from its cgroup and its processes' `/proc` files.
//!
//! `lab run interference` asks this of each aggressor twice, when its victim starts and when the
//! victim is done: the difference is the work the aggressor did *beside* the victim. An aggressor
//! that did nothing measurable (a sandbox that died before the victim started, a writer that
//! wrote nothing) must not give a slowdown figure, and only readings can tell.
//!
//! Each figure comes from the one place that holds it on both cgroup versions:
//!
//! | figure          | where                                                             |
//! |-----------------|-------------------------------------------------------------------|
//! | tasks           | `pids.current` (threads count: the pids controller counts tasks), or the threads under `/proc/PID/task` when the cgroup has no pids controller |
//! | most tasks      | `pids.peak` (Linux 6.1 on v1 and v2), the high-water mark the kernel keeps |
//! | CPU time        | the cgroup's `cpuacct.usage` / `cpu.stat`, or the processes' `utime + stime` from `/proc/PID/stat` |
//! | bytes written   | the processes' `write_bytes` from `/proc/PID/io`: what they sent to the storage layer, `O_DIRECT` included |

use super::{read_u64, Cgroup};
use nix::unistd::Pid;
use std::fs;

/// One reading of an instance's activity. `None`: the kernel did not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Processes in the cgroup (its subtree).
    pub processes: u64,
    /// Tasks (processes and their threads) in the cgroup now.
    pub tasks: Option<u64>,
    /// CPU time its processes have used so far.
    pub cpu_ns: Option<u64>,
    /// Bytes its living processes have written to storage so far.
    pub written_bytes: Option<u64>,
}

impl Cgroup {
    /// The number of tasks (processes and threads) in the cgroup now: `pids.current`, which
    /// counts the whole subtree, or the threads of its processes where it has no pids directory.
    pub fn tasks(&self) -> Option<u64> {
        if let Some(dir) = self.dir("pids") {
            if let Some(n) = read_u64(&dir.join("pids.current")) {
                return Some(n);
            }
        }
        let pids = self.pids();
        (!pids.is_empty()).then(|| pids.iter().map(|p| threads(*p)).sum())
    }

    /// The most tasks the cgroup ever held at once (`pids.peak`, Linux 6.1), where it has a pids
    /// directory and the kernel keeps one.
    pub fn tasks_peak(&self) -> Option<u64> {
        read_u64(&self.dir("pids")?.join("pids.peak"))
    }

    /// What the cgroup's processes are doing now.
    pub fn activity(&self) -> Activity {
        let pids = self.pids();
        let cpu_ns = self.cpu_usage_ns().or_else(|| {
            let ticks: Option<u64> = pids.iter().map(|p| cpu_ticks(*p)).sum();
            ticks.map(|t| t.saturating_mul(1_000_000_000) / clock_ticks())
        });
        let written_bytes = pids.iter().map(|p| written(*p)).sum();
        Activity {
            processes: pids.len() as u64,
            tasks: self.tasks(),
            cpu_ns,
            written_bytes: if pids.is_empty() { None } else { written_bytes },
        }
    }
}

/// Threads of one process (at least the process itself while it lives).
fn threads(pid: Pid) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count() as u64)
}

/// `utime + stime` of a process, in clock ticks (fields 14 and 15 of `/proc/PID/stat`, counted
/// after the command name, which may itself hold spaces and parentheses: it ends at the last
/// `)`).
fn cpu_ticks(pid: Pid) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's clock ticks per second for `/proc` times (`USER_HZ`, 100 on Linux).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// `write_bytes` of `/proc/PID/io`: bytes this process caused to be sent to storage.
fn written(pid: Pid) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_write_that_reached_the_disk_is_counted_and_times_parse() {
        let me = Pid::this();
        assert!(cpu_ticks(me).is_some());
        assert!(threads(me) >= 1);
        let before = written(me).expect("/proc/self/io");
        // /var/tmp is on a disk (a tmpfs write never reaches storage and is not counted).
        let path =
            std::path::PathBuf::from(format!("/var/tmp/isolab-activity-{}", std::process::id()));
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::remove_file(&path).unwrap();
        let after = written(me).unwrap();
        assert!(after - before >= 1 << 20, "{before} -> {after}");
        assert!(clock_ticks() >= 100);
    }
}
