//! What an instance's processes cost in memory, from `/proc/PID/smaps_rollup`.
//!
//! * **RSS** counts every resident page a process maps, shared or not: summing it over processes
//!   counts shared pages many times.
//! * **PSS** (proportional set size) divides each shared page among the processes sharing it:
//!   summing PSS over all processes of a machine gives its real memory use.
//! * **USS** (unique set size: private clean + private dirty) is what would be freed if the
//!   process exited: the honest "cost of one more instance".
//!
//! The cgroup's own counters (`isolab_resources::cgroup::MemoryReading`) add what these miss: kernel
//! memory (namespaces, page tables, KVM state) and page cache charged to the instance.

use serde::{Deserialize, Serialize};
use std::fs;

/// Memory of a set of processes, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// Resident set size, summed.
    pub rss_bytes: u64,
    /// Proportional set size, summed.
    pub pss_bytes: u64,
    /// Unique set size (private clean + private dirty), summed.
    pub uss_bytes: u64,
    /// The anonymous and shared-memory part of PSS (`Pss_Anon` + `Pss_Shmem`), summed: heaps,
    /// stacks, written data, a VM's guest RAM. File pages (the program's code) are left out:
    /// they are page cache that every instance of the same program shares. (Not "private
    /// dirty": a freshly written executable's page-cache pages are dirty until written back,
    /// so they would count as the process's own.)
    #[serde(default)]
    pub anon_pss_bytes: u64,
    /// Processes counted.
    pub processes: u32,
}

impl ProcessMemory {
    /// Read `smaps_rollup` of each PID and add them up. Processes that vanished are skipped.
    pub fn of(pids: impl IntoIterator<Item = i32>) -> ProcessMemory {
        let mut total = ProcessMemory::default();
        for pid in pids {
            if let Some(one) = read_rollup(pid) {
                total.rss_bytes += one.rss_bytes;
                total.pss_bytes += one.pss_bytes;
                total.uss_bytes += one.uss_bytes;
                total.anon_pss_bytes += one.anon_pss_bytes;
                total.processes += 1;
            }
        }
        total
    }
}

fn read_rollup(pid: i32) -> Option<ProcessMemory> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_rollup(&text))
}

/// The value in bytes of a `Key:   123 kB` line, the format of /proc's memory files
/// (smaps_rollup, meminfo, status); 0 when the key is absent.
pub fn kb_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

/// Parse smaps_rollup.
fn parse_rollup(text: &str) -> ProcessMemory {
    let kb = |key: &str| kb_field(text, key);
    ProcessMemory {
        rss_bytes: kb("Rss"),
        pss_bytes: kb("Pss"),
        uss_bytes: kb("Private_Clean") + kb("Private_Dirty"),
        anon_pss_bytes: kb("Pss_Anon") + kb("Pss_Shmem"),
        processes: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rollup() {
        let text = "00400000-7ffd [rollup]\nRss:                1000 kB\nPss:                 600 kB\nPss_Anon:            100 kB\nShared_Clean:        400 kB\nPrivate_Clean:       200 kB\nPrivate_Dirty:       300 kB\n";
        let m = parse_rollup(text);
        assert_eq!(m.rss_bytes, 1000 * 1024);
        assert_eq!(m.pss_bytes, 600 * 1024);
        assert_eq!(m.uss_bytes, 500 * 1024);
        assert_eq!(m.anon_pss_bytes, 100 * 1024);
    }

    #[test]
    fn reads_our_own_process() {
        let me = ProcessMemory::of([std::process::id() as i32]);
        assert_eq!(me.processes, 1);
        assert!(me.rss_bytes >= me.pss_bytes && me.pss_bytes >= me.uss_bytes && me.uss_bytes > 0);
    }
}
