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
    report("root_on_host", &root_on_host(&uid_map, guest));
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

/// Who this instance's root is on the host, from its uid map (`inside outside count` per line).
///
/// A map of `0 0 4294967295` is the initial user namespace's: uid 0 here is the host's root,
/// whatever else confines it. A user namespace maps uid 0 to some other uid outside (`0 1000 1`
/// rootless, a uid of its own for a root lab's container). A guest's users are its own kernel's:
/// the host sees only the VMM.
fn root_on_host(uid_map: &str, guest: bool) -> String {
    if guest {
        return "no: the guest kernel's own root; the host sees a VMM process".into();
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
