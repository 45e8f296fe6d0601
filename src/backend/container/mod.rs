//! `container`: isolab's own container runtime, built directly on the kernel's primitives.
//!
//! A container is not a thing the kernel knows about. It is an ordinary process that was given
//! private namespaces ([`namespaces`]), a private root file system ([`rootfs`]), fewer privileges
//! ([`capabilities`]) and resource limits (a cgroup, [`crate::cgroup`]). This module puts those
//! together in the order they must happen, in one child process:
//!
//! ```text
//!  lab ── clone(CLONE_NEWPID [| CLONE_NEWUSER]) ──► init, PID 1 of a new PID namespace
//!                                                    │ join the instance's cgroup
//!   (not root: write init's uid/gid maps) ◄──────────┤ [wait for the maps]
//!                                                    │ unshare(mount, uts, ipc, net, cgroup)
//!                                                    │ build the root file system, pivot_root
//!                                                    │ host name, drop capabilities, no_new_privs
//!                                                    └ exec /workload
//! ```
//!
//! Why is only the PID namespace created by `clone`, and the rest by `unshare` afterwards?
//! Kernel memory is charged to the cgroup of the task that allocates it. The lab allocates
//! whatever `clone` creates; init allocates what `unshare` creates. So init first joins the
//! container's cgroup, and only then creates the heavy namespaces (a network namespace alone is
//! tens of KiB), which are thereby counted as the container's. The PID namespace must come from
//! `clone`, because `unshare(CLONE_NEWPID)` never moves the caller itself into the new
//! namespace, only its future children — and the workload must be PID 1. What stays charged to
//! the lab is init's own task structure, kernel stack and the small PID namespace object, the
//! same as for the `process` backend's child.

pub mod capabilities;
pub mod namespaces;
pub mod rootfs;

use super::child::{self, Exec, Reporter, CONTROL_FD, REPORT_FD, SYNC_FD};
use super::instance::{Instance, Parts, Timeline};
use super::spawn::{clone_fork, spawn_shared, Stack};
use super::{Availability, Backend, BackendError, Limits, Spec};
use crate::lab::Lab;
use crate::results::info;
use crate::workload::{self, Kernel, WORKLOAD_ELF};
use capabilities::CapPlan;
use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{getgid, getuid};
use rootfs::RootfsPlan;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The `container` backend.
#[derive(Clone, Debug, Default)]
pub struct Container {
    /// Put a static busybox at `/bin/busybox` (and `/bin/sh`) for exercises that want a shell.
    pub busybox: Option<PathBuf>,
    /// Use a user namespace: `None` decides by privilege (only when not root), `Some(true)`
    /// also as root — the "rootless" set-up, where the container's root is an ordinary user
    /// outside.
    pub userns: Option<bool>,
}

impl Backend for Container {
    fn name(&self) -> &str {
        "container"
    }

    fn describe(&self) -> &str {
        "isolab's runtime: user/pid/mount/uts/ipc/net/cgroup namespaces, pivot_root, cgroup limits"
    }

    fn family(&self) -> crate::results::Family {
        crate::results::Family::Container
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if let Availability::Unavailable(why) = Availability::of_cgroups(lab) {
            return Availability::Unavailable(why);
        }
        if namespaces::need_userns() {
            if let Some(why) = crate::host::userns_restriction() {
                return Availability::Unavailable(format!(
                    "not root and user namespaces are restricted: {why} (see `lab doctor`)"
                ));
            }
        }
        Availability::Available
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let name = lab.next_instance_name();
        let cgroup = lab.cgroups()?.create(&name, limits)?;
        let placement = cgroup.placement()?;
        timeline.mark("cgroup");

        // Everything the two child processes need, prepared while allocating is still safe.
        let userns = self.userns.unwrap_or_else(namespaces::need_userns);
        let scratch = lab.scratch_dir();
        let plan = RootfsPlan::new(
            &lab.rootfs_mount_point(),
            &lab.workload_path(),
            self.busybox.as_deref(),
            (spec.kernel == Kernel::Io).then_some(scratch.as_path()),
            &format!("isolab-{name}"),
            userns,
        );
        let caps = CapPlan::new(&capabilities::DOCKER_DEFAULT, crate::host::cap_last_cap());
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, "/scratch");
        let exec = Exec::new(rootfs::WORKLOAD_PATH.as_ref(), "workload", &args, &[]);
        let (lab_sync, child_sync) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(BackendError::sys("socketpair"))?;
        let (ends, fds) = child::pipes(userns.then_some(child_sync))?;

        let mut body = || -> libc::c_int {
            if let Err(e) = fds.install() {
                fds.reporter().fail("install fds", e);
            }
            init(userns, &plan, &caps, &exec)
        };
        let clone_flags = libc::CLONE_NEWPID | if userns { libc::CLONE_NEWUSER } else { 0 };
        // As root, init shares the lab's memory until it execs and the lab sleeps meanwhile (see
        // `spawn_shared`): the cheapest start. Without root the lab must stay awake to write init's
        // uid/gid maps, so init is an ordinary copy-on-write fork.
        let pid = if userns {
            // SAFETY: init only makes system calls on prepared data, then execs or exits.
            match unsafe { clone_fork(clone_flags, &placement, fds.reporter()) }
                .map_err(BackendError::sys("clone"))?
            {
                None => child::exit_now(body()),
                Some(pid) => pid,
            }
        } else {
            let mut stack = Stack::new();
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
            .map_err(BackendError::sys("clone"))?
        };
        drop(fds);
        drop(placement);
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup: Some(cgroup),
            ends,
            timeline,
            timeout: lab.timeout,
            cleanup: Vec::new(),
        });
        // The "image": everything the container's root holds.
        instance.note(info::IMAGE_BYTES, WORKLOAD_ELF.len());
        instance.note(
            info::IMAGE,
            "tmpfs root holding one static executable (the workload)",
        );
        // From here on, dropping `instance` on an error kills and reaps whatever was started.
        if userns {
            let mut sync = UnixStream::from(lab_sync);
            sync.set_read_timeout(Some(lab.timeout))
                .map_err(BackendError::io("sync"))?;
            // Init waits for its uid/gid maps. If it failed instead, the socket closes, and
            // waiting for `ready` reports init's error line.
            if read_byte(&mut sync).is_some() {
                namespaces::write_id_maps(pid, getuid(), getgid())
                    .map_err(BackendError::io("write uid/gid maps"))?;
                sync.write_all(b"m").map_err(BackendError::io("sync"))?;
            }
        }
        Ok(instance)
    }
}

fn read_byte(stream: &mut UnixStream) -> Option<u8> {
    let mut b = [0u8; 1];
    stream.read_exact(&mut b).ok().map(|_| b[0])
}

/// **Init (child side)**, PID 1 of the new PID namespace, already in the container's cgroup:
/// the remaining namespaces, the root, the host name, capabilities, exec. Never returns.
fn init(userns: bool, plan: &RootfsPlan, caps: &CapPlan, exec: &Exec) -> ! {
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
    if unsafe { libc::unshare(namespaces::UNSHARED) } != 0 {
        report.fail("unshare namespaces", Errno::last());
    }
    report.phase("namespaces");
    if let Err(failure) = plan.enter() {
        report.fail(failure.0, failure.1);
    }
    report.phase("rootfs");
    if let Err(failure) = caps.apply() {
        report.fail(failure.0, failure.1);
    }
    report.phase("exec");
    let e = exec.exec();
    report.fail("exec /workload", e)
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
