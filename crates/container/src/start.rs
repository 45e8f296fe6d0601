//! Starting one container: its init, cloned into a new PID namespace, building the rest of the
//! container around itself step by step, each step its own start-up phase, then becoming the
//! workload. Two ways in ([`crate`] explains when each is taken):
//!
//! * [`from_launcher`] — as root, from the launcher thread's template root and filter
//!   ([`crate::launcher`]): init finishes a copy of the template, attaches what the host shares
//!   with it ([`detached_tree`]), and hardens itself ([`harden`]);
//! * [`spawn_alone`] — rootless, or on a root of its own (the lab's layered image): init builds
//!   its whole root ([`init`]); rootless, it first waits for the lab to write its uid/gid maps
//!   ([`finish_rootless`]).

use crate::capabilities::CapPlan;
use crate::launcher::Launcher;
use crate::profile::Security;
use crate::rootfs::RootfsPlan;
use crate::{namespaces, rootfs, seccomp};
use isolab_spawn::child;
use isolab_spawn::child::{ChildFds, Exec, ParentEnds, Reporter, SYNC_FD};
use isolab_spawn::{clone_fork, spawn_shared, Placement, SpawnError, Stack};
use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{getgid, getuid, Pid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Errors of starting a container's init.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A system call the lab made failed.
    #[error("{step}: {source}")]
    Sys {
        /// What the lab was doing.
        step: &'static str,
        /// The error.
        source: Errno,
    },
    /// Host file I/O failed.
    #[error("{action}: {source}")]
    Io {
        /// What the lab was doing.
        action: String,
        /// The error.
        source: std::io::Error,
    },
    /// Preparing init's descriptors failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The kernel refuses the container's user namespace; the reason names the fix.
    #[error("{reason}")]
    Unavailable {
        /// Why, with the fix.
        reason: String,
    },
    /// The launcher thread is gone.
    #[error("the launcher thread has stopped")]
    LauncherStopped,
}

impl StartError {
    /// The error of system call `step`, for `map_err`.
    pub fn sys(step: &'static str) -> impl FnOnce(Errno) -> StartError {
        move |source| StartError::Sys { step, source }
    }

    /// The error of I/O while `action`, for `map_err`.
    pub fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
        let action = action.into();
        move |source| StartError::Io { action, source }
    }
}

/// Start `job`'s init from `launcher`'s thread: its clone shares the lab's memory until it
/// execs ([`Job::spawn`]).
pub fn from_launcher(launcher: &Launcher, job: Job) -> Result<Pid, StartError> {
    launcher
        .run(move |stack| job.spawn(stack))
        .ok_or(StartError::LauncherStopped)?
        .map_err(StartError::sys("clone"))
}

/// Rootless: answer init's request for its uid/gid maps on `sync` (the lab's end of
/// [`spawn_alone`]'s socket), within `timeout`. If init failed instead, the socket closes, and
/// waiting for `ready` reports init's error line.
pub fn finish_rootless(pid: Pid, sync: OwnedFd, timeout: Duration) -> Result<(), StartError> {
    let mut sync = UnixStream::from(sync);
    sync.set_read_timeout(Some(timeout))
        .map_err(StartError::io("sync"))?;
    if read_byte(&mut sync).is_some() {
        namespaces::write_id_maps(pid, getuid(), getgid()).map_err(|e| {
            userns_refused(
                "writing its uid/gid maps",
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })?;
        sync.write_all(b"m").map_err(StartError::io("sync"))?;
    }
    Ok(())
}

/// Why a rootless container has no device policy, and why it needs none.
pub const ROOTLESS_DEVICES: &str =
    "a lab without root may neither load the BPF program (cgroup v2) \
     nor write a devices cgroup (v1); in its user namespace the container can make no device \
     node, and its /dev holds only the host's null, zero, full, random, urandom and tty";

/// Why a root lab's containers keep the host's root, if they must; asked once per process.
pub fn mapped_root_refused() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(namespaces::mapped_root_refused).as_deref()
}

/// Who the container's root is on the host, in words (the `container_root` fact).
pub fn container_root(userns: bool, mapped: Option<&namespaces::MappedRoot>) -> String {
    match (userns, mapped) {
        (true, _) => format!(
            "uid {}: the lab's own (rootless, a user namespace)",
            getuid().as_raw()
        ),
        (false, Some(m)) => format!(
            "uid {}: an unprivileged uid of its own (a user namespace entered last)",
            m.id
        ),
        (false, None) => match mapped_root_refused() {
            Some(why) => format!("uid 0: the host's root ({why})"),
            None => "uid 0: the host's root (no user namespace, as Docker by default)".into(),
        },
    }
}

/// `open_tree(OPEN_TREE_CLONE)` (Linux 5.2): a copy of the mount at `path` that is attached to
/// no namespace yet. The container attaches it in its own with `move_mount`.
pub fn detached_tree(path: &Path) -> Result<OwnedFd, StartError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| StartError::io("open_tree")(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: open_tree with a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(StartError::sys("open_tree the scratch directory")(
            Errno::last(),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// An [`Exec`] handed to the launcher thread. Its pointers point into its own heap strings,
/// which move with it, so another thread may use it.
pub struct SendExec(pub Exec);

// SAFETY: the raw pointers in `Exec` point into CStrings it owns (see above); nothing else
// refers to them.
unsafe impl Send for SendExec {}

/// One container start, handed to the launcher thread ([`from_launcher`]).
pub struct Job {
    /// The pipes and descriptors init installs.
    pub fds: ChildFds,
    /// The cgroup init is born in.
    pub placement: Placement,
    /// Its root: the launcher's template, finished by init.
    pub plan: RootfsPlan,
    /// The namespaces init creates with `unshare` (all but the network's when it joins a link's).
    pub unshared: libc::c_int,
    /// Detached mounts of the host's (the scratch directory, the disk) and where they go.
    pub attach: Vec<(OwnedFd, &'static std::ffi::CStr)>,
    /// The profile: masks, capabilities, the seccomp filter.
    pub security: Arc<Security>,
    /// The capabilities it keeps.
    pub caps: CapPlan,
    /// A root lab's container: the uid its root becomes, last.
    pub mapped: Option<namespaces::MappedRoot>,
    /// The workload it becomes.
    pub exec: SendExec,
}

impl Job {
    /// **Launcher thread.** Clone init; it shares the lab's memory until it execs, and this
    /// thread sleeps meanwhile (see [`spawn_shared`]).
    pub fn spawn(self, stack: &mut Stack) -> Result<Pid, Errno> {
        let Job {
            fds,
            placement,
            plan,
            unshared,
            attach,
            security,
            caps,
            mapped,
            exec,
        } = self;
        let filter = security.filter(true);
        let mut body = || -> libc::c_int {
            let report = fds.reporter();
            report.phase("fork");
            // Our parent is the launcher thread: when it ends (the lab ends), so does init.
            if let Err(e) = child::die_with_parent() {
                report.fail("prctl", e);
            }
            // SAFETY: unshare with flags only.
            if unsafe { libc::unshare(unshared) } != 0 {
                report.fail("unshare namespaces", Errno::last());
            }
            report.phase("namespaces");
            // Now in a copy of the template namespace of its own: attach what the host shares
            // with this container there, while the fds are still open (installing the pipes
            // closes every other fd), and take from it every power a file there could have.
            for (tree, target) in &attach {
                let attached =
                    move_tree(tree.as_raw_fd(), target).and_then(|()| rootfs::restrict(*target));
                if let Err(e) = attached {
                    report.fail("attach what the host shares", e);
                }
            }
            if let Err(e) = fds.install() {
                report.fail("install fds", e);
            }
            let report = Reporter::INSTALLED;
            if let Err(failure) = plan.finish() {
                report.fail(failure.0, failure.1);
            }
            report.phase("rootfs");
            harden(&security, &caps, mapped.as_ref(), filter, &exec.0)
        };
        // SAFETY: init only makes system calls on prepared data, then execs or exits.
        unsafe {
            spawn_shared(
                libc::CLONE_NEWPID,
                stack,
                &placement,
                fds.reporter(),
                &mut body,
            )
        }
    }
}

/// **Child side.** `move_mount` (Linux 5.2) of the detached tree `fd` onto `target`.
fn move_tree(fd: libc::c_int, target: &std::ffi::CStr) -> Result<(), Errno> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: move_mount with an fd, an empty path and a NUL-terminated target.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// **Child side**, root in place: masks; the mapped root, if any; capabilities and
/// no_new_privs; the filter; then exec. Each layer is its own phase. Never returns.
pub fn harden(
    security: &Security,
    caps: &CapPlan,
    mapped: Option<&namespaces::MappedRoot>,
    filter: Option<&seccomp::Filter>,
    exec: &Exec,
) -> ! {
    let report = Reporter::INSTALLED;
    if security.profile.hardened() {
        if let Err(failure) = security.masks.apply() {
            report.fail(failure.0, failure.1);
        }
        report.phase("masked_paths");
    }
    if let Some(mapped) = mapped {
        // The last step that needed the host's root is behind us.
        if let Err(failure) = mapped.enter() {
            report.fail(failure.0, failure.1);
        }
        report.phase("userns");
    }
    if let Err(failure) = caps.apply() {
        report.fail(failure.0, failure.1);
    }
    report.phase("capabilities");
    if let Some(filter) = filter {
        // Last, because the filter refuses the calls that built the container; no_new_privs is
        // set (capabilities), so the kernel accepts a filter from a process without
        // CAP_SYS_ADMIN.
        if let Err(e) = filter.load() {
            report.fail("load the seccomp filter", e);
        }
        report.phase("seccomp");
    }
    let e = exec.exec();
    report.fail("exec /workload", e)
}

/// How [`spawn_alone`] starts init.
pub struct Alone {
    /// In a user namespace from its first step (rootless).
    pub userns: bool,
    /// The namespaces it creates with `unshare`.
    pub unshared: libc::c_int,
    /// The network namespace it joins instead of making one.
    pub netns: Option<OwnedFd>,
    /// A root lab's container: the uid its root becomes, last.
    pub mapped: Option<namespaces::MappedRoot>,
}

/// Start init from the lab's own thread: a rootless container (`userns`), or one whose root
/// is not the launcher's template. Returns its PID, the lab's pipe ends and, rootless, the
/// lab's end of the uid/gid map handshake.
pub fn spawn_alone(
    alone: &Alone,
    placement: Placement,
    plan: &RootfsPlan,
    security: &Security,
    caps: &CapPlan,
    exec: &Exec,
) -> Result<(Pid, ParentEnds, Option<OwnedFd>), StartError> {
    let (lab_sync, child_sync) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(StartError::sys("socketpair"))?;
    let userns = alone.userns;
    let (ends, mut fds) = child::pipes(userns.then_some(child_sync))?;
    if let Some(ns) = &alone.netns {
        fds.join_netns(
            ns.try_clone()
                .map_err(StartError::io("dup the link's netns"))?,
        )?;
    }
    let filter = security.filter(false);
    let unshared = alone.unshared;
    let mut body = || -> libc::c_int {
        if let Err(e) = fds.install() {
            fds.reporter().fail("install fds", e);
        }
        init(
            userns,
            unshared,
            plan,
            security,
            caps,
            alone.mapped.as_ref(),
            filter,
            exec,
        )
    };
    let clone_flags = libc::CLONE_NEWPID | if userns { libc::CLONE_NEWUSER } else { 0 };
    // As root, init shares the lab's memory until it execs and the lab sleeps meanwhile (see
    // `spawn_shared`): the cheapest start. Without root the lab must stay awake to write init's
    // uid/gid maps, so init is an ordinary copy-on-write fork.
    let pid = if userns {
        // SAFETY: init only makes system calls on prepared data, then execs or exits.
        match unsafe { clone_fork(clone_flags, &placement, fds.reporter()) }
            .map_err(|e| userns_refused("clone", e))?
        {
            None => child::exit_now(body()),
            Some(pid) => pid,
        }
    } else {
        let mut stack = Stack::new().map_err(StartError::sys("mmap"))?;
        // SAFETY: as above.
        unsafe {
            spawn_shared(
                clone_flags,
                &mut stack,
                &placement,
                fds.reporter(),
                &mut body,
            )
        }
        .map_err(StartError::sys("clone"))?
    };
    Ok((pid, ends, userns.then_some(lab_sync)))
}

/// The error of a rootless container whose user namespace the kernel refused at `step` with
/// `e`: EPERM, EACCES or ENOSPC there mean a restriction on user namespaces, which is named with
/// its fix when one is set (see [`isolab_host::facts::userns_restriction`]).
fn userns_refused(step: &'static str, e: Errno) -> StartError {
    let refused = matches!(
        e,
        Errno::EPERM | Errno::EACCES | Errno::ENOSPC | Errno::EUSERS
    );
    match isolab_host::facts::userns_restriction() {
        Some(why) if refused => StartError::Unavailable {
            reason: format!(
                "the kernel refused its user namespace at {step} ({e}): {why} (fix: {})",
                isolab_host::facts::userns_fix(&why)
            ),
        },
        _ => StartError::sys(step)(e),
    }
}

fn read_byte(stream: &mut UnixStream) -> Option<u8> {
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).ok().map(|_| b[0])
}

/// **Init (child side)** started by [`spawn_alone`], PID 1 of the new PID namespace, already in
/// the container's cgroup: the remaining namespaces, its own root, then [`harden`] and exec.
/// Never returns.
#[allow(clippy::too_many_arguments)]
pub fn init(
    userns: bool,
    unshared: libc::c_int,
    plan: &RootfsPlan,
    security: &Security,
    caps: &CapPlan,
    mapped: Option<&namespaces::MappedRoot>,
    filter: Option<&seccomp::Filter>,
    exec: &Exec,
) -> ! {
    let report = Reporter::INSTALLED;
    report.phase("fork");
    // Our parent is the lab: if the lab dies, so does the container, and with PID 1 gone the
    // kernel kills every other process of the namespace.
    if let Err(e) = child::die_with_parent() {
        report.fail("prctl", e);
    }
    if userns {
        // Ask the lab for our uid/gid maps and wait until they are written: until then we are
        // the "overflow" user 65534 in our namespace, with no right to create anything.
        if sync_write(b"u").is_err() || sync_read().is_err() {
            report.fail("uid/gid map handshake", Errno::last());
        }
        // The sync socket is the lab's business; the workload must not inherit it.
        child::close_from(SYNC_FD);
    }
    // SAFETY: unshare with flags only.
    if unsafe { libc::unshare(unshared) } != 0 {
        report.fail("unshare namespaces", Errno::last());
    }
    report.phase("namespaces");
    if let Err(failure) = plan.enter() {
        report.fail(failure.0, failure.1);
    }
    report.phase("rootfs");
    harden(security, caps, mapped, filter, exec)
}

fn sync_write(bytes: &[u8]) -> Result<(), Errno> {
    // SAFETY: writing a valid buffer to the sync fd.
    let n = unsafe { libc::write(SYNC_FD, bytes.as_ptr().cast(), bytes.len()) };
    if n as usize == bytes.len() {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

fn sync_read() -> Result<(), Errno> {
    let mut b = 0u8;
    // SAFETY: reading one byte into a valid buffer.
    let n = unsafe { libc::read(SYNC_FD, (&mut b as *mut u8).cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
