//! The `probe` kernel: report what this instance can see of the machine.
//!
//! Each fact is one `isolab probe key=... value=...` line. The isolation experiment puts the lines
//! from every backend side by side: a process sees the host, a container sees its namespaces, a
//! guest sees its own kernel.

mod calls;

use crate::shim::LinuxShim;
use isolab_kernels::{wire, Error, Output};
use std::fs;

/// Gather the facts and report them; the checksum folds the number of facts reported. `guest`:
/// this is a Linux guest's init, whose users are the guest kernel's own.
pub fn run(shim: &mut LinuxShim, guest: bool) -> Result<Output, Error> {
    let mut facts = 0u64;
    let mut report = |key: &str, value: &str| {
        shim.emit(
            wire::Line::new(wire::PROBE)
                .text("key", key.as_bytes())
                .text("value", value.as_bytes()),
        );
        facts += 1;
    };

    let uts = nix_uname();
    report("kernel_release", &uts.0);
    report("kernel_version", &uts.1);
    report("hostname", &uts.2);
    report("pid", &std::process::id().to_string());
    report(
        "pids_visible",
        &count_pids().map_or("unknown".into(), |n| n.to_string()),
    );
    let mounts = read("/proc/self/mountinfo");
    report("mounts", &mounts.lines().count().to_string());
    report("root_fs", &root_fs_type(&mounts));
    report("interfaces", &interfaces().join(","));
    report("block_devices", &block_devices().join(","));
    report("root_entries", &root_entries().join(","));
    let uid_map = read("/proc/self/uid_map");
    report("uid_map", &squash(&uid_map));
    report(
        "root_on_host",
        &root_on_host(&uid_map, host_root_seen_as(), guest),
    );
    report("cap_eff", &status_field("CapEff"));
    report("no_new_privs", &status_field("NoNewPrivs"));
    report("seccomp", &seccomp_mode());
    for (key, value) in calls::Calls::try_all().facts() {
        report(key, &value);
    }
    report("cgroup", &squash(&read("/proc/self/cgroup")));
    report(
        "cpus",
        &std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );

    Ok(Output {
        checksum: facts,
        ops: facts,
        bytes: 0,
    })
}

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Who this instance's root is on the host.
///
/// First from its uid map (`inside outside count` per line): a map of `0 0 4294967295` is the
/// initial user namespace's, so uid 0 here is the host's root, whatever else confines it; a user
/// namespace maps uid 0 to some other uid outside (`0 1000 1` rootless, a uid of its own for a
/// root lab's container). A guest's users are its own kernel's: the host sees only the VMM.
///
/// Without a `/proc` to read the map from (a runtime that has not mounted one yet), the kernel
/// still answers: `host_root` is the uid the host's root appears as here ([`host_root_seen_as`]).
/// Without a user namespace every uid is the host's, so the host's root is uid 0 here too.
fn root_on_host(uid_map: &str, host_root: Option<u32>, guest: bool) -> String {
    if guest {
        return "no: the guest kernel's own root; the host sees a VMM process".into();
    }
    if uid_map.trim().is_empty() {
        return match host_root {
            Some(0) => "yes: no /proc/self/uid_map to read, but the host's root is uid 0 here \
                        (the owner of an anonymous inode): no user namespace maps it elsewhere"
                .into(),
            Some(OVERFLOW_UID) => "no: no /proc/self/uid_map to read, but the host's root is \
                                   not mapped here (an anonymous inode is owned by the overflow \
                                   uid 65534): a user namespace"
                .into(),
            Some(uid) => format!(
                "no: no /proc/self/uid_map to read, but the host's root is uid {uid} here \
                 (the owner of an anonymous inode): a user namespace"
            ),
            None => "unknown: no /proc/self/uid_map to read, and no anonymous inode".into(),
        };
    }
    let outside = uid_map.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
        match (f.next()??, f.next()??) {
            (0, outside) => Some(outside),
            _ => None,
        }
    });
    match outside {
        Some(0) => "yes: uid 0 here is uid 0 of the host".into(),
        Some(uid) => format!("no: uid 0 here is uid {uid} outside (a user namespace)"),
        None => "no: uid 0 is not mapped here".into(),
    }
}

/// The uid unmapped ids show as (`/proc/sys/kernel/overflowuid`, 65534 unless changed).
const OVERFLOW_UID: u32 = 65534;

/// The uid the host's root appears as in this process's user namespace, read without `/proc`.
///
/// Every eventfd shares one inode, the kernel's anonymous inode, made at boot by the kernel
/// itself: its owner is the host's root. `fstat` translates an owner into the caller's user
/// namespace: uid 0 where no user namespace maps the host's root elsewhere, the overflow uid
/// (65534) where it is not mapped at all.
fn host_root_seen_as() -> Option<u32> {
    // SAFETY: eventfd with an initial value and no flags; it returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: stat is plain data; fstat fills it for the fd we own, which we then close.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let ok = libc::fstat(fd, &mut st) == 0;
        libc::close(fd);
        ok.then_some(st.st_uid)
    }
}

/// Collapse a multi-line file into one line: lines joined by ';', runs of blanks made single.
fn squash(s: &str) -> String {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(";")
}

fn nix_uname() -> (String, String, String) {
    // SAFETY: utsname is plain bytes; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    unsafe { libc::uname(&mut u) };
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.version), field(&u.nodename))
}

/// Processes visible in this PID namespace: the numeric directories of /proc.
fn count_pids() -> Option<usize> {
    let dir = fs::read_dir("/proc").ok()?;
    Some(
        dir.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count(),
    )
}

/// The file-system type mounted at `/`: the last mountinfo line whose mount point is `/` (the one
/// on top).
fn root_fs_type(mountinfo: &str) -> String {
    mountinfo
        .lines()
        .rev()
        .find_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (fields.get(4) == Some(&"/")).then(|| fields.get(sep + 1).unwrap_or(&"?").to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What the root directory holds, sorted: the whole file system a container starts with.
fn root_entries() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Network interfaces of this network namespace, from /proc/net/dev.
fn interfaces() -> Vec<String> {
    read("/proc/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// The disks the kernel knows (`/sys/block`), without the RAM and loop devices every kernel
/// may have: a guest given a virtio disk lists `vda`.
fn block_devices() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn status_field(name: &str) -> String {
    read("/proc/self/status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The seccomp mode of this process, from `/proc/self/status`: `disabled`, `strict`, or
/// `filter` with the number of filters stacked on it.
fn seccomp_mode() -> String {
    let filters = status_field("Seccomp_filters");
    match status_field("Seccomp").as_str() {
        "0" => "disabled".into(),
        "1" => "strict".into(),
        "2" if filters != "unknown" => format!("filter ({filters})"),
        "2" => "filter".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_read_from_the_uid_map_when_there_is_one() {
        let host = root_on_host("0 0 4294967295\n", Some(0), false);
        assert!(host.starts_with("yes"), "{host}");
        let mapped = root_on_host("0 100000 1\n", Some(OVERFLOW_UID), false);
        assert!(
            mapped.starts_with("no: uid 0 here is uid 100000"),
            "{mapped}"
        );
    }

    #[test]
    fn without_proc_the_anonymous_inode_tells_whose_root_this_is() {
        assert!(root_on_host("", Some(0), false).starts_with("yes"));
        assert!(root_on_host("", Some(OVERFLOW_UID), false).starts_with("no"));
        assert!(root_on_host("", Some(1000), false).starts_with("no"));
        assert!(root_on_host("", None, false).starts_with("unknown"));
        // Never "uid 0 is not mapped here" for a map it could not read.
        assert!(!root_on_host("", Some(0), false).contains("not mapped here"));
    }

    /// The kernel's answer itself: uid 0 in the host's user namespace, the overflow uid in a
    /// new one that maps nothing.
    #[test]
    fn the_host_root_is_seen_as_uid_0_here_and_unmapped_in_a_new_user_namespace() {
        assert_eq!(host_root_seen_as(), Some(0));
        // SAFETY: fork; the child makes system calls only and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: the child has one thread, as unshare(CLONE_NEWUSER) requires.
            let code = unsafe {
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    2
                } else if host_root_seen_as() == Some(OVERFLOW_UID) {
                    0
                } else {
                    1
                }
            };
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: wait for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status));
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "1: not the overflow uid; 2: no unshare"
        );
    }
}
