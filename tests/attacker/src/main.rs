//! `isolab-attacker`: the adversary of isolab's security tests (`tests/security/`).
//!
//! A lab that teaches isolation must not itself be the hole. The tests put this program where
//! an attacker's code would be and check that each attack fails:
//!
//! * **as a container's init**, in place of the workload (the tests overwrite the lab's copy of
//!   the workload with this file before the first container starts). It gets the workload's
//!   command line (`kernel=io … report=3 control=4 scratch=/scratch`), tries every escape below
//!   from inside, reports what each did as `probe` lines on the report pipe, says `ready`, and
//!   waits for the host's go-ahead — so the test can look at the host while it still runs;
//! * **as a student's runtime or VMM** (`student.rs`): started by `lab check --program` or the
//!   `student:*` backends, it tries the host it runs on;
//! * **as an ordinary user on the host**: `whoami` (run as a setuid copy: did it give root?),
//!   `open PATH` (a device node planted from inside), `plant DIR` (symbolic links where the lab
//!   will write), `race-disk` and `plant-disk` (the disk directory: see `diskdir.rs`).
//!
//! Escapes tried from inside a container:
//!
//! | key                 | attempt                                                                 |
//! |---------------------|-------------------------------------------------------------------------|
//! | `attack.setuid`     | copy itself into `/scratch` and `chmod 4755`: a root-owned setuid file   |
//! | `attack.mknod`      | `mknod /scratch/kvm c 10 232`, mode 0666: a device node host users open |
//! | `attack.symlinks`   | plant `isolab-io-<pid>` links to a host file where backends write       |
//! | `attack.workload`   | open `/workload` for writing: the file the `process` backend runs as   |
//! |                     | root (its `/proc/self/exe` before it moved: CVE-2019-5736's route)      |
//! | `attack.fds`        | every open descriptor and what it points at: a leaked host directory    |
//! | `attack.cgroupfs`   | mount cgroup2: write the host's limits from inside                      |
//! | `attack.uid_map`    | who the container's root is on the host                                 |
//! | `attack.running_from` | where it runs from: a copy, so `/workload` is not busy              |
//! | `attack.userns_mount`, … | namespaces, mounts, keyrings: what seccomp must refuse (seccomp.rs) |
//!
//! and the terminal, device and capability attacks of [`devices`].

mod devices;
mod diskdir;
mod seccomp;
mod student;

use isolab_kernels::wire::{self, Line};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

/// The host file every planted link points at; the test creates it and checks it is untouched.
pub const VICTIM: &str = "/tmp/security-test-victim";

/// The PIDs the planted links are named after. The test makes the kernel hand out the next PIDs
/// from here (`/proc/sys/kernel/ns_last_pid`), as an attacker who plants thousands would hit
/// one by chance.
pub const FIRST_PID: u32 = 20_000;
/// How many PIDs from [`FIRST_PID`] get a link.
pub const PIDS: u32 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["whoami"] => {
            // SAFETY: getuid and geteuid cannot fail.
            let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
            println!("uid={uid} euid={euid}");
        }
        ["open", path] => match open(path, libc::O_RDWR) {
            Ok(fd) => {
                close(fd);
                println!("opened");
            }
            Err(e) => println!("errno={e}"),
        },
        ["plant", dir] => {
            let (planted, errno) = plant(dir);
            println!("planted={planted} errno={errno}");
        }
        ["race-disk", dir, victim] => diskdir::race(dir, victim),
        ["plant-disk", dir, tmp, first, count] => {
            diskdir::plant(dir, tmp, first.parse().unwrap(), count.parse().unwrap())
        }
        _ if student::is_student(&args) => student::run(&args),
        _ => inside(&args),
    }
}

/// As a container's init: try every escape, report, wait for the host.
///
/// First it moves out of `/workload`: while a program runs from a file, the kernel refuses to
/// open that file for writing (`ETXTBSY`), which would hide whether the file is writable at
/// all. So it runs again from a copy — in memory, or wherever it may write and execute — and
/// tries from there.
fn inside(args: &[String]) {
    let again = "stage=2";
    if !args.iter().any(|a| a == again) {
        let exe = std::fs::read("/proc/self/exe").unwrap_or_default();
        let words: Vec<CString> = std::iter::once("attacker-stage-2")
            .chain(args.iter().map(String::as_str))
            .chain([again])
            .map(c)
            .collect();
        let mut argv: Vec<*const libc::c_char> = words.iter().map(|w| w.as_ptr()).collect();
        argv.push(std::ptr::null());
        // First from memory: a memfd holds a copy no file system needs to allow, run with
        // execveat(fd, "", AT_EMPTY_PATH).
        // SAFETY: a NUL-terminated name and flags.
        let memfd = unsafe { libc::memfd_create(c"attacker".as_ptr(), libc::MFD_CLOEXEC) };
        if memfd >= 0 {
            // SAFETY: a valid buffer to the memfd just made; then execveat with an empty path,
            // a NULL-terminated argv and an empty environment, all alive across the call.
            unsafe {
                libc::write(memfd, exe.as_ptr().cast(), exe.len());
                let env: [*const libc::c_char; 1] = [std::ptr::null()];
                libc::syscall(
                    libc::SYS_execveat,
                    memfd,
                    c"".as_ptr(),
                    argv.as_ptr(),
                    env.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            close(memfd);
        }
        for dir in ["/tmp", "/dev/shm", "/scratch"] {
            let copy = format!("{dir}/attacker-stage-2");
            if std::fs::write(&copy, &exe).is_ok() && chmod(&copy, 0o755).is_ok() {
                let program = c(&copy);
                // SAFETY: a NUL-terminated path and a NULL-terminated array of such strings,
                // all alive across the call; it returns only on failure.
                unsafe { libc::execv(program.as_ptr(), argv.as_ptr()) };
                let _ = std::fs::remove_file(&copy);
            }
        }
    }
    let field = |key: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let fd = |key: &str, default: i32| field(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    let report = fd("report", 1);
    let control = fd("control", 0);
    let scratch = field("scratch").unwrap_or_else(|| "/scratch".into());

    let moved = std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut facts: Vec<(&str, String)> = vec![
        ("attack.running_from", moved),
        ("attack.victim", VICTIM.into()),
        ("attack.pids", format!("{FIRST_PID}+{PIDS}")),
        ("attack.setuid", setuid_copy(&scratch)),
        ("attack.mknod", mknod_kvm(&scratch)),
    ];
    let (planted, errno) = plant(&scratch);
    facts.push((
        "attack.symlinks",
        format!("planted={planted} errno={errno}"),
    ));
    facts.push(("attack.workload", writable("/workload")));
    facts.push(("attack.fds", open_fds()));
    facts.push(("attack.cgroupfs", mount_cgroupfs()));
    facts.extend(seccomp::attacks());
    facts.push((
        "attack.uid_map",
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|e| format!("unreadable: {e}")),
    ));

    let mut facts: Vec<(String, String)> =
        facts.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    facts.extend(devices::facts());
    for (key, value) in &facts {
        emit(
            report,
            Line::new(wire::PROBE)
                .field("key", key)
                .text("value", value.as_bytes()),
        );
    }
    emit(report, Line::new(wire::READY).field("t", now_ns()));
    // Stay alive until the host has looked: one byte, or end of file.
    let mut byte = [0u8; 1];
    // SAFETY: reading into a valid one-byte buffer from an inherited fd.
    unsafe { libc::read(control, byte.as_mut_ptr().cast(), 1) };
    emit(
        report,
        Line::new(wire::DONE)
            .field("t", now_ns())
            .hex("checksum", 0)
            .field("ops", 0)
            .field("bytes", 0),
    );
}

/// Copy this program into `dir` and make it setuid: whoever owns it is who runs it.
fn setuid_copy(dir: &str) -> String {
    let path = format!("{dir}/suid");
    let mut exe = Vec::new();
    if let Err(e) = std::fs::File::open("/proc/self/exe").and_then(|mut f| f.read_to_end(&mut exe))
    {
        return format!("read self: {e}");
    }
    if let Err(e) = std::fs::write(&path, &exe) {
        return format!("write: {e}");
    }
    match chmod(&path, 0o4755) {
        Ok(()) => "planted".into(),
        Err(e) => format!("chmod errno={e}"),
    }
}

/// A character device node for `/dev/kvm` (10:232), open to everyone.
fn mknod_kvm(dir: &str) -> String {
    let path = c(&format!("{dir}/kvm"));
    // SAFETY: a NUL-terminated path and plain integers.
    let r = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 232)) };
    if r != 0 {
        return format!("errno={}", errno());
    }
    match chmod(&format!("{dir}/kvm"), 0o666) {
        Ok(()) => "planted".into(),
        Err(e) => format!("chmod errno={e}"),
    }
}

/// Plant `isolab-io-<pid>` (the workload's scratch file) and `isolab-io-vm-<pid>-0` (the VMM's)
/// in `dir`, pointing at [`VICTIM`], for every PID of the range. Returns how many were planted
/// and the last error (0: none).
fn plant(dir: &str) -> (u32, i32) {
    let target = c(VICTIM);
    let (mut planted, mut last) = (0, 0);
    for pid in FIRST_PID..FIRST_PID + PIDS {
        for name in [format!("isolab-io-{pid}"), format!("isolab-io-vm-{pid}-0")] {
            let link = c(&format!("{dir}/{name}"));
            // SAFETY: two NUL-terminated paths.
            if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } == 0 {
                planted += 1;
            } else {
                last = errno();
            }
        }
    }
    (planted, last)
}

/// Whether `path` opens for writing.
fn writable(path: &str) -> String {
    match open(path, libc::O_WRONLY) {
        Ok(fd) => {
            close(fd);
            "opened for writing".into()
        }
        Err(e) => format!("errno={e}"),
    }
}

/// `fd:target` of every descriptor this process holds.
fn open_fds() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return "unreadable".into();
    };
    let mut fds: Vec<(u32, String)> = dir
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((n, target.to_string_lossy().into_owned()))
        })
        // The directory being listed is the only descriptor read_dir itself holds.
        .filter(|(_, t)| !t.starts_with("/proc/") || !t.ends_with("/fd"))
        .collect();
    fds.sort();
    fds.iter()
        .map(|(n, t)| format!("{n}:{t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Mount the cgroup2 file system: with it, the container's own limits would be writable.
fn mount_cgroupfs() -> String {
    let _ = std::fs::create_dir("/tmp/cg");
    let (src, dst, kind) = (c("none"), c("/tmp/cg"), c("cgroup2"));
    // SAFETY: NUL-terminated strings and no data.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        "mounted".into()
    } else {
        format!("errno={}", errno())
    }
}

fn emit(fd: i32, mut line: Line) {
    let bytes = line.finish();
    // SAFETY: a valid buffer to an inherited fd.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn c(s: &str) -> CString {
    CString::new(std::ffi::OsStr::new(s).as_bytes()).expect("no NUL")
}

fn open(path: &str, flags: i32) -> Result<i32, i32> {
    let p = c(path);
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

fn close(fd: i32) {
    // SAFETY: an fd this program opened, closed once.
    unsafe { libc::close(fd) };
}

fn chmod(path: &str, mode: libc::mode_t) -> Result<(), i32> {
    let p = c(path);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chmod(p.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
