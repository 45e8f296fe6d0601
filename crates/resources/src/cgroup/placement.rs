//! Where an instance's first process is born: which cgroup, and by which mechanism.
//!
//! This is a cgroup question, not a backend's: the answer depends on the cgroup interface (v1 or
//! v2), on the kernel (does it know `clone3(CLONE_INTO_CGROUP)`?) and on whether the lab has
//! cgroups at all (a lab without root on a v1 machine, or without a delegated v2 subtree, has
//! none). Backends only hand a [`Placement`] to `isolab-spawn`, which picks the
//! system call it says.
//!
//! * **v2, Linux 5.7+**: the cgroup's directory, opened. `clone3(CLONE_INTO_CGROUP)` creates the
//!   child *inside* it: no migration ever happens, so no lock is taken and nothing the child
//!   allocates is charged anywhere else.
//! * **v1, or an older kernel**: files the child writes `0` ("me") into as its first act. On v1
//!   that is each hierarchy's `tasks`, which moves only the calling thread and so avoids the
//!   global `cgroup_threadgroup_rwsem` whose writer waits for an RCU grace period (see
//!   [`crate::cgroup::Cgroup::join_fds`]); on v2 it is `cgroup.procs` (v2 moves threads one by one only in
//!   threaded subtrees).
//! * **no cgroups**: nothing; the child stays in the lab's cgroup.
//!
//! A child made by glibc's `fork()` — the VMM, which goes on running the lab's code — cannot be
//! asked to use `clone3`; the backends' `vmm_launch` shows how it is born in its cgroup
//! on v2 all the same.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Where a new process must live: its cgroup, as the system calls that put it there want it.
#[derive(Debug, Default)]
pub struct Placement {
    /// A v2 cgroup directory for `clone3(CLONE_INTO_CGROUP)`.
    pub into: Option<OwnedFd>,
    /// Files to write `0` into ("move me here"), opened by the parent: v1's `tasks` of each
    /// hierarchy, or v2's `cgroup.procs` when `clone3` is not available.
    pub join: Vec<OwnedFd>,
}

impl Placement {
    /// No cgroup: the child stays in the lab's.
    pub fn none() -> Placement {
        Placement::default()
    }

    /// Where `cgroup` says, or nowhere when the lab has no cgroups.
    pub fn of(
        cgroup: Option<&crate::cgroup::Cgroup>,
    ) -> Result<Placement, crate::cgroup::CgroupError> {
        cgroup.map_or_else(|| Ok(Placement::none()), crate::cgroup::Cgroup::placement)
    }

    /// The cgroup directory to be born in (`clone3`'s `cgroup` field), if there is one.
    pub fn birth_dir(&self) -> Option<RawFd> {
        self.into.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// **Child side**, async-signal-safe: write `0` to each join file. A child born in its
    /// cgroup by `clone3` skips this.
    pub fn join(&self) -> Result<(), Errno> {
        for fd in &self.join {
            // SAFETY: writing a 1-byte buffer to an fd we own.
            Errno::result(unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) })?;
        }
        Ok(())
    }
}
