//! Namespaces: what a container's processes can see.
//!
//! Each namespace gives the container a private copy of one kind of kernel name space:
//!
//! | flag              | private copy of                           | seen inside as          |
//! |-------------------|-------------------------------------------|-------------------------|
//! | `CLONE_NEWUSER`   | user and group IDs (only when not root)    | uid 0 mapped to you     |
//! | `CLONE_NEWPID`    | process IDs                               | the workload is PID 1   |
//! | `CLONE_NEWNS`     | the mount table                           | its own root file system|
//! | `CLONE_NEWUTS`    | host name and domain name                 | its own host name       |
//! | `CLONE_NEWIPC`    | System V IPC, POSIX message queues        | none of the host's      |
//! | `CLONE_NEWNET`    | network devices, addresses, routes, ports | only `lo`, down         |
//! | `CLONE_NEWCGROUP` | the view of the cgroup tree               | its cgroup as `/`       |
//!
//! There is no time namespace: the container shares the host's `CLOCK_MONOTONIC`, which is what
//! lets the workload timestamp its own `ready`.

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
