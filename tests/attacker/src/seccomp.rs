//! Attacks on the seccomp profile: what a container's root does with the system calls Docker's
//! default profile keeps for `CAP_SYS_ADMIN`.
//!
//! A container's root holds 14 capabilities, `CAP_SYS_ADMIN` not among them, so it cannot
//! make a mount or network namespace, nor mount anything. But any process may make a **user
//! namespace** (`CLONE_NEWUSER` needs no capability), and inside it the process is root with
//! *every* capability over whatever that namespace owns: new mount, network and UTS namespaces,
//! and mounts of the file systems a user namespace may mount (tmpfs, proc, ...). That is the
//! first step of many kernel exploits — it opens code paths (netfilter, overlayfs, ...) to an
//! unprivileged caller. Docker's profile therefore refuses the namespace flags of `clone` and
//! `unshare`, `mount`, and the kernel's keyring (`keyctl`, not namespaced) to a container that
//! lacks `CAP_SYS_ADMIN`. Each attack below runs in a child process of its own, so what it
//! makes dies with the child and the attacker's other reports see the container as it was.
//!
//! | key                 | attempt                                                            |
//! |---------------------|--------------------------------------------------------------------|
//! | `attack.userns_mount` | `unshare(CLONE_NEWUSER)`, then mount, network and UTS namespaces, |
//! |                     | then a tmpfs mounted and a host name set: root of its own namespaces |
//! | `attack.unshare`    | `unshare` with each namespace flag alone: `user:ok mnt:errno=1 …`   |
//! | `attack.clone`      | `clone` with each namespace flag alone                              |
//! | `attack.keyctl`     | `keyctl`: the user keyring of the caller's uid, and its description |

use std::ffi::CString;

/// The namespace flags, with the names `/proc/PID/ns/` gives them.
const FLAGS: [(&str, libc::c_int); 8] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
];

/// Every attack of this module, as `(key, what happened)`.
pub fn attacks() -> Vec<(&'static str, String)> {
    vec![
        ("attack.userns_mount", in_child(userns_then_mount)),
        (
            "attack.unshare",
            each_flag(&FLAGS, |flag| unshare(flag).err()),
        ),
        // CLONE_NEWTIME is 0x80, inside the byte where `clone` takes its exit signal: only
        // `unshare` and `clone3` can ask for a time namespace (the last flag).
        ("attack.clone", each_flag(&FLAGS[..7], clone_with)),
        ("attack.keyctl", in_child(user_keyring)),
    ]
}

/// The whole attack: a user namespace, in it the namespaces only `CAP_SYS_ADMIN` may make,
/// then a mount. `Ok` says what was gained.
fn userns_then_mount() -> Result<String, String> {
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    unshare(libc::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER) errno={e}"))?;
    // Root of the new namespace: map its uid 0 onto ours (a process may map its own uid).
    let _ = std::fs::write("/proc/self/setgroups", "deny");
    let _ = std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"));
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
        .map_err(|e| format!("write uid_map: {e}"))?;
    unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWUTS)
        .map_err(|e| format!("user namespace made; unshare(mnt, net, uts) errno={e}"))?;
    // Keep what follows to this namespace (a user namespace's mounts are slaves already).
    let root = c("/");
    // SAFETY: NUL-terminated strings and no data.
    unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    // On a directory the container has (a bundle's root may have no /tmp).
    let target = ["/tmp", "/scratch", "/dev", "/"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .unwrap_or("/");
    let (src, dst, kind) = (c("isolab-attack"), c(target), c("tmpfs"));
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
    if r != 0 {
        return Err(format!(
            "user, mount, net, uts namespaces made; mount tmpfs on {target} errno={}",
            errno()
        ));
    }
    // SAFETY: a valid buffer of the given length.
    let named = unsafe { libc::sethostname(c"attacker".as_ptr(), 8) } == 0;
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&format!(" {target} ")) && l.contains(" - tmpfs isolab-attack"));
    let caps = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Ok(format!(
        "mounted a tmpfs on {target} (in mountinfo: {mounted}) as root of a user namespace \
         of its own, CapEff {caps}, with mount, net and uts namespaces{}",
        if named { ", host name set" } else { "" }
    ))
}

/// The user keyring of the caller's uid, made if missing: kernel state keyed by uid that a
/// container shares with the host's user of the same uid.
fn user_keyring() -> Result<String, String> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEYCTL_DESCRIBE: libc::c_long = 6;
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    // SAFETY: keyctl with integer arguments; 1: create the keyring if it does not exist.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_USER_KEYRING,
            1,
        )
    };
    if id < 0 {
        return Err(format!("errno={}", errno()));
    }
    let mut buf = [0u8; 256];
    // SAFETY: a writable buffer and its length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_DESCRIBE,
            id,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let described = match n {
        n if n > 0 => String::from_utf8_lossy(&buf[..(n as usize - 1).min(buf.len())]).into_owned(),
        _ => format!("describe errno={}", errno()),
    };
    Ok(format!("user keyring {id}: {described}"))
}

/// `flag:ok` or `flag:errno=N` for each of `flags`, each tried by `attempt` in a child.
fn each_flag(flags: &[(&str, libc::c_int)], attempt: fn(libc::c_int) -> Option<i32>) -> String {
    flags
        .iter()
        .map(|&(name, flag)| {
            let outcome = in_child(move || match attempt(flag) {
                None => Ok("ok".into()),
                Some(e) => Err(format!("errno={e}")),
            });
            format!("{name}:{outcome}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn unshare(flags: libc::c_int) -> Result<(), i32> {
    // SAFETY: unshare with flags only; it changes the calling (child) process alone.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// The raw `clone` system call with `flag` (no new stack: the child returns from the call on
/// a copy of ours, as `fork` does), whose child exits at once. `None` when it succeeded.
fn clone_with(flag: libc::c_int) -> Option<i32> {
    // SAFETY: clone without CLONE_VM behaves as fork: the child gets a copy of the address
    // space and only calls _exit.
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
        0 => {
            // SAFETY: the clone's child ends at once.
            unsafe { libc::_exit(0) }
        }
        p if p > 0 => {
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(p as i32, std::ptr::null_mut(), 0) };
            None
        }
        _ => Some(errno()),
    }
}

/// Run `attempt` in a forked child and bring back its words: what it gained, or the step that
/// failed (as the attempt said it).
fn in_child(attempt: impl FnOnce() -> Result<String, String>) -> String {
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return format!("pipe errno={}", errno());
    }
    // SAFETY: the child runs `attempt`, writes its result and exits; the parent only reads.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let words = match attempt() {
            Ok(gained) => gained,
            Err(failed) => failed,
        };
        // SAFETY: a valid buffer to the pipe's write end; then _exit.
        unsafe {
            libc::write(fds[1], words.as_ptr().cast(), words.len());
            libc::_exit(0)
        }
    }
    // SAFETY: closing our copy of the write end, once.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing the read end, once; waiting for our own child.
    unsafe {
        libc::close(fds[0]);
        if pid > 0 {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if pid < 0 {
        return format!("fork errno={}", errno());
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
