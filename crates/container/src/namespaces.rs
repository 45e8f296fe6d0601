//! Namespaces: what a container's processes can see.
//!
//! Each namespace gives the container a private copy of one kind of kernel name space:
//!
//! | flag              | private copy of                           | seen inside as          |
//! |-------------------|-------------------------------------------|-------------------------|
//! | `CLONE_NEWUSER`   | user and group IDs                        | uid 0: you, or nobody   |
//! | `CLONE_NEWPID`    | process IDs                               | the workload is PID 1   |
//! | `CLONE_NEWNS`     | the mount table                           | its own root file system|
//! | `CLONE_NEWUTS`    | host name and domain name                 | its own host name       |
//! | `CLONE_NEWIPC`    | System V IPC, POSIX message queues        | none of the host's      |
//! | `CLONE_NEWNET`    | network devices, addresses, routes, ports | only `lo`, down         |
//! | `CLONE_NEWCGROUP` | the view of the cgroup tree               | its cgroup as `/`       |
//!
//! There is no time namespace: the container shares the host's `CLOCK_MONOTONIC`, which is what
//! lets the workload timestamp its own `ready`.
//!
//! **Who is root inside?** Without a user namespace, the container's uid 0 *is* the host's uid
//! 0: its capabilities are trimmed and its view is private, but a file it writes where the host
//! can reach it is root's, a setuid bit it sets is root's. That is Docker's default. A user
//! namespace maps uid 0 inside to an ordinary uid outside. isolab always uses one: rootless (the
//! lab is not root), uid 0 is you, as with rootless Docker or Podman; as root, uid 0 is a uid of
//! its own that no account uses ([`MappedRoot`]), as with Docker's `userns-remap`.

use nix::errno::Errno;
use nix::unistd::{Gid, Pid, Uid};
use std::fs;

/// The namespaces init creates with `unshare` once it is in the container's cgroup.
pub const UNSHARED: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP;

/// The namespaces of an isolab container, without the user namespace.
pub const CONTAINER: libc::c_int = UNSHARED | libc::CLONE_NEWPID;

/// The clone/unshare flags for a container. Root needs no user namespace; anyone else does,
/// because creating the other namespaces requires `CAP_SYS_ADMIN`, which an unprivileged user
/// has only inside a user namespace of their own.
pub fn flags(userns: bool) -> libc::c_int {
    if userns {
        CONTAINER | libc::CLONE_NEWUSER
    } else {
        CONTAINER
    }
}

/// Whether this lab must use a user namespace (it is not root).
pub fn need_userns() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// **Parent side.** Map uid and gid 0 inside `pid`'s new user namespace to our own uid and gid.
///
/// Only one ID can be mapped without privilege (more needs the setuid helpers newuidmap and
/// newgidmap). `setgroups` must be denied before an unprivileged gid_map is accepted: otherwise
/// the process could drop a supplementary group that was denying it access to something.
pub fn write_id_maps(pid: Pid, uid: Uid, gid: Gid) -> std::io::Result<()> {
    let proc = format!("/proc/{pid}");
    fs::write(format!("{proc}/uid_map"), format!("0 {uid} 1\n"))?;
    fs::write(format!("{proc}/setgroups"), "deny\n")?;
    fs::write(format!("{proc}/gid_map"), format!("0 {gid} 1\n"))?;
    Ok(())
}

/// The first host uid (and gid) isolab gives a container's root when the lab runs as root.
///
/// Well away from every range in use: accounts (below 60000), systemd's dynamic users and
/// homed (up to 65535), `systemd-nspawn --private-users=pick` (524288 to 1879048191); below
/// 2^31, where tools that treat IDs as signed numbers go wrong.
pub const MAPPED_ROOT_FIRST: u32 = 2_000_000_000;

/// How many uids from [`MAPPED_ROOT_FIRST`] container roots are spread over.
pub const MAPPED_ROOT_SPAN: u32 = 1 << 26;

/// Why a root lab cannot give its containers a root of their own, if it cannot: the kernel
/// allows no user namespaces at all ([`isolab_host::facts::userns_fix`] says how to allow them).
pub fn mapped_root_refused() -> Option<String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").ok()?;
    (max.trim() == "0").then(|| "user.max_user_namespaces is 0".to_string())
}

/// A container's root as the host sees it, when the lab runs as root: one uid (and the gid of
/// the same number) of its own, mapped to uid 0 in a user namespace the container enters last,
/// after everything that needs the host's root is done.
///
/// Why last, not first (as runc does with a user namespace)? The lab's containers start from a
/// template mount namespace that belongs to the host's user namespace ([`crate::launcher`]); a
/// container that entered a user namespace first could not mount its `/proc` there. So init
/// builds its container as the host's root, then becomes the mapped uid in a namespace of its
/// own. The namespaces made before it stay the host user namespace's: the container's root holds
/// Docker's capabilities, but over nothing the host owns — it cannot, say, bind a port below
/// 1024 in its own network namespace, which Docker's root can. Stricter than Docker's default,
/// never looser.
#[derive(Clone, Debug)]
pub struct MappedRoot {
    /// The host uid and gid.
    pub id: u32,
    /// `0 <id> 1\n`, the one line of its uid and gid maps, prepared before the clone (the
    /// child must not allocate).
    map: Vec<u8>,
}

impl MappedRoot {
    /// The mapped root of the container named `name` (unique on this host): a uid spread by a
    /// hash of the name, so containers of one lab, and of labs side by side, get different
    /// ones.
    pub fn for_container(name: &str) -> MappedRoot {
        // FNV-1a: a fixed, dependency-free hash; collisions only cost a shared uid.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let id = MAPPED_ROOT_FIRST + (hash % u64::from(MAPPED_ROOT_SPAN)) as u32;
        MappedRoot {
            id,
            map: format!("0 {id} 1\n").into_bytes(),
        }
    }

    /// **Child side**, root with every capability, after the last step that needs the host's
    /// root: become [`MappedRoot::id`] outside and uid 0 inside a new user namespace. Makes only
    /// system calls on prepared data. On error returns the step that failed.
    ///
    /// 1. `PR_SET_KEEPCAPS`, then the uid and gid change: without it, leaving uid 0 clears every
    ///    capability; with it the permitted set stays (the effective one is cleared) and is
    ///    raised again. The namespace is then created by a process that holds `CAP_SYS_ADMIN`:
    ///    a *privileged* creation, which Ubuntu's AppArmor restriction on unprivileged user
    ///    namespaces leaves alone.
    /// 2. `unshare(CLONE_NEWUSER)`: a namespace owned by the new uid, in which this process has
    ///    every capability — and none left in the host's.
    /// 3. Its maps, written by the process itself: a namespace's owner may map its own uid and
    ///    gid, one line each (`setgroups` denied first, so that dropping a group can never
    ///    grant access). `PR_SET_DUMPABLE` first: changing uid made the process non-dumpable,
    ///    and the `/proc/self` files of a non-dumpable process belong to the host's root.
    pub fn enter(&self) -> Result<(), (&'static str, Errno)> {
        let id = libc::c_long::from(self.id);
        // Raw system calls, not glibc's wrappers: glibc changes IDs in *every* thread of the
        // process it believes it is (its "setxid broadcast", signalling each thread and waiting
        // for it). Init shares the lab's memory until it execs, so glibc would see the lab's
        // threads as its own, signal them from a PID namespace where they do not exist, and
        // wait forever. The kernel's calls change this process alone — which is what is meant.
        // SAFETY: prctl, setgroups, setresgid and setresuid with integer arguments or a null
        // list of length 0.
        unsafe {
            check(
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
                "keep capabilities",
            )?;
            raw(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                "setgroups",
            )?;
            raw(
                libc::syscall(libc::SYS_setresgid, id, id, id),
                "setresgid to the mapped root",
            )?;
            raw(
                libc::syscall(libc::SYS_setresuid, id, id, id),
                "setresuid to the mapped root",
            )?;
        }
        crate::capabilities::permitted()
            .and_then(crate::capabilities::set)
            .map_err(|e| ("raise capabilities", e))?;
        // SAFETY: unshare and prctl with flags only.
        unsafe {
            check(
                libc::unshare(libc::CLONE_NEWUSER),
                "unshare a user namespace",
            )?;
            check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")?;
        }
        write_proc(c"/proc/self/uid_map", &self.map).map_err(|e| ("write uid_map", e))?;
        write_proc(c"/proc/self/setgroups", b"deny\n").map_err(|e| ("write setgroups", e))?;
        write_proc(c"/proc/self/gid_map", &self.map).map_err(|e| ("write gid_map", e))?;
        Ok(())
    }
}

fn raw(r: libc::c_long, step: &'static str) -> Result<(), (&'static str, Errno)> {
    check(if r == 0 { 0 } else { -1 }, step)
}

fn check(r: libc::c_int, step: &'static str) -> Result<(), (&'static str, Errno)> {
    if r == 0 {
        Ok(())
    } else {
        Err((step, Errno::last()))
    }
}

/// **Child side.** Write `bytes` to a `/proc` file in one `write`, as the kernel wants.
fn write_proc(path: &std::ffi::CStr, bytes: &[u8]) -> Result<(), Errno> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a valid buffer to the fd just opened, which is closed once.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let result = if n as usize == bytes.len() {
        Ok(())
    } else {
        Err(Errno::last())
    };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    result
}
