//! Looking at a student's container or VMM from outside, through `/proc` and `setns`.
//!
//! The workload's `probe` says what a container looks like from inside. Some properties only
//! show from outside: who is whose parent, which file descriptors a VMM holds, what it mapped,
//! and whether the host's root is still mounted in the container's mount namespace (the
//! difference between `pivot_root` and `chroot`).

use nix::errno::Errno;
use nix::unistd::Pid;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// A field of `/proc/PID/status` (`PPid`, `NSpid`, `CapBnd`, `NoNewPrivs`, ...).
pub fn status_field(pid: Pid, name: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| Some(l.strip_prefix(name)?.strip_prefix(':')?.trim().to_string()))
}

/// The parent of `pid`.
pub fn parent(pid: Pid) -> Option<Pid> {
    status_field(pid, "PPid")?.parse().ok().map(Pid::from_raw)
}

/// Where each open file descriptor of `pid` points (`anon_inode:kvm-vm`, `pipe:[…]`, paths).
pub fn fd_targets(pid: Pid) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

/// One mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Its first address.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// What is mapped (a path, `anon_inode:kvm-vcpu:0`, empty for anonymous memory).
    pub what: String,
}

/// The mappings of `pid`.
pub fn mappings(pid: Pid) -> Vec<Mapping> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let len = u64::from_str_radix(end, 16).ok()? - start;
            let what = fields.nth(4).unwrap_or("").to_string();
            Some(Mapping { start, len, what })
        })
        .collect()
}

/// The command line of `pid`, its words joined by spaces.
pub fn cmdline(pid: Pid) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Is the host's root directory reachable in the mount namespace of `pid`?
///
/// A child process joins that mount namespace with `setns`, which puts it at the namespace's
/// root (the topmost mount there), and compares the device and inode of `/`, of each entry of
/// `/` and of each entry one level below with those of the host's `/`. After `pivot_root` and
/// unmounting the old root, none matches. After a mere `chroot` the namespace's root *is* the
/// host's; after `pivot_root` without the unmount, the old root is still mounted on top of the
/// new one or below it.
pub fn host_root_reachable(pid: Pid) -> Result<bool, String> {
    let host_root = fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
    let target = (host_root.dev(), host_root.ino());
    let ns = CString::new(format!("/proc/{pid}/ns/mnt")).expect("no NUL");
    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| format!("pipe: {}", e.desc()))?;
    // SAFETY: the child makes only async-signal-safe system calls on data prepared before the
    // fork (no allocation, no locks), then _exits; the parent only waits for it.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", Errno::last().desc())),
        0 => {
            use std::os::fd::AsRawFd;
            let answer: u8 = match join_and_scan(&ns, target) {
                Ok(true) => b'y',
                Ok(false) => b'n',
                Err(_) => b'e',
            };
            // SAFETY: writing one byte from a valid buffer to the pipe, then ending the child.
            unsafe {
                libc::write(write_end.as_raw_fd(), (&answer as *const u8).cast(), 1);
                libc::_exit(0)
            }
        }
        child => {
            drop(write_end);
            let mut byte = [0u8; 1];
            let got = nix::unistd::read(&read_end, &mut byte);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(child), None);
            match (got, byte[0]) {
                (Ok(1), b'y') => Ok(true),
                (Ok(1), b'n') => Ok(false),
                _ => Err(format!(
                    "could not enter the mount namespace of process {pid} (is the lab root?)"
                )),
            }
        }
    }
}

/// **In the forked child.** Join the mount namespace at `ns` and look for `target`.
fn join_and_scan(ns: &CString, target: (u64, u64)) -> Result<bool, Errno> {
    // SAFETY: open a path we own, O_CLOEXEC.
    let fd = Errno::result(unsafe { libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: setns with an fd we just opened; this process has one thread.
    Errno::result(unsafe { libc::setns(fd, libc::CLONE_NEWNS) })?;
    // SAFETY: opening "/" (a static C string) as a directory.
    let root = Errno::result(unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    if same(root, c"".as_ptr(), libc::AT_EMPTY_PATH, target) {
        return Ok(true);
    }
    scan(root, 2, target)
}

/// Does `name` in directory `dir` have `target`'s device and inode?
fn same(dir: i32, name: *const libc::c_char, flags: i32, target: (u64, u64)) -> bool {
    // SAFETY: stat is plain data; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a NUL-terminated string in a live buffer; `st` is writable.
    let ok = unsafe { libc::fstatat(dir, name, &mut st, flags | libc::AT_SYMLINK_NOFOLLOW) } == 0;
    ok && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR && (st.st_dev, st.st_ino) == target
}

/// Look for `target` among the entries of `dir`, and `depth - 1` levels below.
fn scan(dir: i32, depth: u32, target: (u64, u64)) -> Result<bool, Errno> {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: getdents64 into a valid, writable buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir,
                buf.as_mut_ptr(),
                buf.len() as libc::c_uint,
            )
        };
        let n = Errno::result(n)? as usize;
        if n == 0 {
            return Ok(false);
        }
        let mut at = 0;
        while at < n {
            // struct linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let name_len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let is_dot = matches!(&name[..name_len], b"." | b"..");
            if !is_dot {
                let cname = name.as_ptr().cast::<libc::c_char>();
                if same(dir, cname, 0, target) {
                    return Ok(true);
                }
                if depth > 1 {
                    // SAFETY: opening an entry of an open directory, NUL-terminated name.
                    let sub = unsafe {
                        libc::openat(
                            dir,
                            cname,
                            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                        )
                    };
                    if sub >= 0 {
                        let found = scan(sub, depth - 1, target);
                        // SAFETY: closing the fd just opened.
                        unsafe { libc::close(sub) };
                        if found? {
                            return Ok(true);
                        }
                    }
                }
            }
            at += reclen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_reaches_the_host_root() {
        // This process is not in a container: its mount namespace's root is the host's.
        let me = Pid::this();
        assert_eq!(host_root_reachable(me), Ok(true));
        assert!(parent(me).is_some());
        assert!(mappings(me).iter().any(|m| m.len > 0));
        assert!(!fd_targets(me).is_empty());
        assert!(cmdline(me).contains("isolab"));
        assert!(status_field(me, "NSpid").is_some());
    }
}
