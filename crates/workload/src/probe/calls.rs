//! The system calls an attacker inside an instance wants, tried one by one.
//!
//! A container's root keeps 14 capabilities, `CAP_SYS_ADMIN` not among them. That alone does not
//! stop it from building namespaces: a **user namespace** needs no capability, and inside one
//! the caller holds every capability over what that namespace owns — new mount, network and
//! UTS namespaces, mounts of a tmpfs or a procfs. It is the first step of many kernel exploits,
//! since it opens code (netfilter, file systems) to an unprivileged caller. Docker's seccomp
//! profile therefore refuses the namespace flags of `clone` and `unshare`, `mount`, `keyctl`
//! (the kernel's keyrings are not namespaced), `bpf` and `perf_event_open` to a container
//! without `CAP_SYS_ADMIN`.
//!
//! Each attempt runs in a child process of its own, so one that succeeds changes nothing the
//! probe reports (what it made dies with the child). Each is reported as `ok` or the errno it
//! failed with, which tells who refused:
//!
//! * `EPERM`: refused before the call did anything — by a seccomp filter (Docker's profile
//!   answers EPERM) or for want of a capability;
//! * `ENOSYS`: the filter pretends the call does not exist, or the kernel lacks it;
//! * `EACCES`, `EINVAL`, ...: the kernel ran the call, and the caller's rights or arguments
//!   failed it.

/// The namespace flags, with the names `/proc/PID/ns/` gives them. `CLONE_NEWTIME` is last:
/// it is 0x80, inside the byte where `clone` takes the child's exit signal, so only `unshare`
/// (and `clone3`) can ask for a time namespace.
pub const FLAGS: [(&str, libc::c_int); 8] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

/// What each attempt came to.
pub struct Calls {
    /// `unshare` with each flag alone.
    pub unshare: Vec<(&'static str, String)>,
    /// `clone` with each flag alone (all but time).
    pub clone: Vec<(&'static str, String)>,
    /// A tmpfs mounted in a mount namespace of the child's own, made directly or, failing
    /// that, as root of a new user namespace.
    pub mount_tmpfs: String,
    /// `mount` of a file-system type that does not exist, in the instance's own namespace: a
    /// kernel that gets as far as looking the type up (ENODEV) let the caller mount.
    pub mount: String,
    /// `keyctl`: the session keyring's id.
    pub keyctl: String,
    /// `bpf`: a one-entry array map.
    pub bpf: String,
    /// `perf_event_open`: a software event counting this process in user mode only.
    pub perf_event_open: String,
    /// `ptrace(PTRACE_TRACEME)`: let the parent trace and modify this process.
    pub ptrace: String,
}

impl Calls {
    /// Try every call.
    pub fn try_all() -> Calls {
        let flags = |list: &[(&'static str, libc::c_int)], attempt: fn(libc::c_int) -> String| {
            list.iter()
                .map(|&(name, flag)| (name, in_child(move || attempt(flag))))
                .collect()
        };
        Calls {
            unshare: flags(&FLAGS, |flag| outcome(unshare(flag))),
            clone: flags(&FLAGS[..7], clone_with),
            mount_tmpfs: in_child(mount_tmpfs),
            mount: in_child(|| harmless(mount_no_such_fs(), libc::ENODEV)),
            keyctl: in_child(|| harmless(keyctl(), libc::ENOKEY)),
            bpf: in_child(bpf_map),
            perf_event_open: in_child(perf_event),
            ptrace: in_child(|| outcome(ptrace_traceme())),
        }
    }

    /// The probe's facts: one per call, and `sensitive_calls`, the one-line summary older
    /// results have (`unshare:` is `ok` when any namespace flag was allowed).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let list = |each: &[(&str, String)]| {
            each.iter()
                .map(|(name, o)| format!("{name}:{o}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let unshare = match self.unshare.iter().find(|(_, o)| o == "ok") {
            Some(_) => "ok".to_string(),
            None => self.unshare[0].1.clone(),
        };
        vec![
            (
                "sensitive_calls",
                format!(
                    "unshare:{unshare} mount:{} keyctl:{} ptrace:{}",
                    self.mount, self.keyctl, self.ptrace
                ),
            ),
            ("unshare_flags", list(&self.unshare)),
            ("clone_flags", list(&self.clone)),
            ("mount_tmpfs", self.mount_tmpfs.clone()),
            ("keyctl", self.keyctl.clone()),
            ("bpf", self.bpf.clone()),
            ("perf_event_open", self.perf_event_open.clone()),
            ("ptrace", self.ptrace.clone()),
        ]
    }
}

/// `Ok` → `ok`, else the errno's name.
fn outcome(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// As [`outcome`], but an errno that means the kernel let the call through counts as `ok`.
fn harmless(r: Result<(), i32>, through: i32) -> String {
    outcome(r.or_else(|e| if e == through { Ok(()) } else { Err(e) }))
}

fn check(r: libc::c_long) -> Result<(), i32> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: unshare with flags only; it changes the calling (child) process alone.
    check(unsafe { libc::unshare(flags) } as libc::c_long)
}

/// The raw `clone` with `flag` (no new stack: the new process returns from the call on a copy
/// of ours, as from `fork`), whose child exits at once.
fn clone_with(flag: libc::c_int) -> String {
    // SAFETY: clone without CLONE_VM is a fork; the new process only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flag | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        // SAFETY: the clone's child ends at once.
        0 => unsafe { libc::_exit(0) },
        p if p > 0 => {
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(p as i32, std::ptr::null_mut(), 0) };
            "ok".into()
        }
        _ => errno_name(errno()),
    }
}

/// A tmpfs on `/` of a mount namespace of this child's own: made directly (with
/// `CAP_SYS_ADMIN`), else as root of a new user namespace, which needs no capability.
fn mount_tmpfs() -> String {
    let how = match unshare(libc::CLONE_NEWNS) {
        Ok(()) => "",
        Err(_) => {
            // SAFETY: geteuid and getegid cannot fail.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            if let Err(e) = unshare(libc::CLONE_NEWUSER) {
                return format!("{} (unshare)", errno_name(e));
            }
            // Map the new namespace's root onto our uid (a process may map its own).
            let _ = std::fs::write("/proc/self/setgroups", "deny");
            let _ = std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"));
            let _ = std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"));
            if let Err(e) = unshare(libc::CLONE_NEWNS) {
                return format!("{} (unshare in a new user namespace)", errno_name(e));
            }
            " (as root of a new user namespace)"
        }
    };
    // Private first: a mount namespace starts with the propagation of the one it copies, and a
    // shared `/` would pass the new mount back to it.
    // SAFETY: NUL-terminated strings and no data.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        return format!("{} (make / private)", errno_name(errno()));
    }
    // SAFETY: NUL-terminated strings and no data.
    let r = unsafe {
        libc::mount(
            c"isolab-probe".as_ptr(),
            c"/".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    match r {
        0 => format!("ok{how}"),
        _ => format!("{} (mount{how})", errno_name(errno())),
    }
}

fn mount_no_such_fs() -> Result<(), i32> {
    // SAFETY: NUL-terminated strings; the type does not exist, so nothing can be mounted.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount,
            c"none".as_ptr(),
            c"/".as_ptr(),
            c"isolab-no-such-fs".as_ptr(),
            0,
            0,
        )
    })
}

fn keyctl() -> Result<(), i32> {
    // SAFETY: KEYCTL_GET_KEYRING_ID (0) of the session keyring (-3), without creating it (0).
    check(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) })
}

/// `bpf(BPF_MAP_CREATE)` of an array map of one 4-byte entry, closed at once.
fn bpf_map() -> String {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    // union bpf_attr for BPF_MAP_CREATE starts map_type, key_size, value_size, max_entries;
    // the rest stays zero (the kernel checks that what it does not know is zero).
    let mut attr = [0u32; 16];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: a valid attribute buffer and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return errno_name(errno());
    }
    // SAFETY: the map's fd, ours, closed once.
    unsafe { libc::close(fd as i32) };
    "ok".into()
}

/// `perf_event_open` of the software "dummy" event on this process, user mode only (what a
/// `perf_event_paranoid` of 2 still lets anyone do), closed at once.
fn perf_event() -> String {
    const PERF_TYPE_SOFTWARE: u64 = 1;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    const SIZE: u64 = 64; // PERF_ATTR_SIZE_VER0
    const EXCLUDE_KERNEL: u64 = 1 << 5;
    const EXCLUDE_HV: u64 = 1 << 6;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // struct perf_event_attr: type (u32) and size (u32), config, then at byte 40 the flags.
    let mut attr = [0u64; 16];
    attr[0] = PERF_TYPE_SOFTWARE | SIZE << 32;
    attr[1] = PERF_COUNT_SW_DUMMY;
    attr[5] = EXCLUDE_KERNEL | EXCLUDE_HV;
    // SAFETY: a valid attribute buffer; this process (0), any CPU (-1), no group (-1).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return errno_name(errno());
    }
    // SAFETY: the event's fd, ours, closed once.
    unsafe { libc::close(fd as i32) };
    "ok".into()
}

fn ptrace_traceme() -> Result<(), i32> {
    // SAFETY: PTRACE_TRACEME: the parent (the probe) may trace this child, which then exits.
    check(unsafe { libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) })
}

/// Run `attempt` in a forked child and bring back what it said.
fn in_child(attempt: impl FnOnce() -> String) -> String {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return format!("pipe failed: {}", errno_name(errno()));
    }
    // SAFETY: the child makes its attempt, writes one line and exits; the parent only reads.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let words = attempt();
        // SAFETY: a valid buffer to the pipe's write end, then _exit.
        unsafe {
            libc::write(fds[1], words.as_ptr().cast(), words.len());
            libc::_exit(0)
        }
    }
    // SAFETY: our copy of the write end, closed once.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: the read end, closed once.
    unsafe { libc::close(fds[0]) };
    if pid < 0 {
        return format!("fork failed: {}", errno_name(errno()));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        return format!("killed by signal {}", libc::WTERMSIG(status));
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn errno() -> i32 {
    // SAFETY: reading this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::ENODEV => "ENODEV",
        libc::EFAULT => "EFAULT",
        libc::ENOKEY => "ENOKEY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOSPC => "ENOSPC",
        libc::EUSERS => "EUSERS",
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        _ => return format!("errno {e}"),
    };
    name.into()
}
