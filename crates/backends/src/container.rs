//! `container`: isolab's own container runtime ([`isolab_container`]) as a backend.
//!
//! The runtime's pieces — namespaces, the root file system, capabilities, seccomp — are the
//! `isolab-container` crate; this file starts one instance of it for the lab: its cgroup, what the
//! lab shares with it (a scratch directory, a disk, a network link), and the facts its runs
//! record.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_container::capabilities::CapPlan;
use isolab_container::profile::Security;
use isolab_container::rootfs::RootfsPlan;
use isolab_container::{namespaces, rootfs, seccomp};
use isolab_payload as workload;
use isolab_resources::image::overlay;
use isolab_resources::image::overlay::Upper;
use isolab_results::info;
use isolab_spawn::child;
use isolab_spawn::child::{ChildFds, Exec, ParentEnds, Reporter, CONTROL_FD, REPORT_FD, SYNC_FD};
use isolab_spawn::{clone_fork, spawn_shared, Placement, Stack};
use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::{getgid, getuid, Pid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `container` backend.
#[derive(Clone, Debug, Default)]
pub struct Container {
    /// Put a static busybox at `/bin/busybox` (and `/bin/sh`) for exercises that want a shell.
    pub busybox: Option<PathBuf>,
    /// Start the container the rootless way, in a user namespace from its first step: `None`
    /// decides by privilege (only when not root), `Some(true)` also as root — the container's
    /// root is then the lab's own uid outside.
    pub userns: Option<bool>,
    /// As root, leave the container's root the host's root, as Docker does by default (no
    /// `userns-remap`). Without it a root lab maps the container's root to a uid of its own
    /// ([`namespaces::MappedRoot`]), unless the kernel allows no user namespace at all.
    pub host_root: bool,
}

impl Backend for Container {
    fn name(&self) -> &str {
        "container"
    }

    fn describe(&self) -> &str {
        "isolab's runtime: namespaces, pivot_root, cgroup limits, Docker's masks, capabilities and seccomp profile"
    }

    fn family(&self) -> isolab_results::Family {
        isolab_results::Family::Container
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if namespaces::need_userns() {
            if let Some(why) = isolab_host::facts::userns_restriction() {
                return Availability::Unavailable(format!(
                    "not root and user namespaces are restricted: {why} (see `lab doctor`)"
                ));
            }
        }
        match lab.security() {
            Ok(_) => Availability::Available,
            Err(why) => Availability::Unavailable(why),
        }
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let mut timeline = Timeline::start();
        let fresh = !lab.security_ready();
        let security = lab.security().map_err(|reason| BackendError::Unavailable {
            backend: self.name().into(),
            reason,
        })?;
        let name = lab.next_instance_name();
        let userns = self.userns.unwrap_or_else(namespaces::need_userns);
        let hostname = format!("isolab-{name}");
        // Who the container's root is on the host: a uid of its own where the lab is root
        // (see `namespaces::MappedRoot`), the lab's own uid rootless.
        let mapped = (!userns && !self.host_root && mapped_root_refused().is_none())
            .then(|| namespaces::MappedRoot::for_container(&name));
        let provisions = lab.provide(spec, &name, mapped.as_ref().map(|m| (m.id, m.id)))?;
        // A network kernel's container joins the namespace of its link to the peer instead of
        // making an empty one.
        let netns = provisions
            .link
            .as_ref()
            .map(|l| l.ns.try_clone_fd())
            .transpose()
            .map_err(BackendError::io("dup the link's netns"))?;
        let unshared = match netns {
            Some(_) => namespaces::UNSHARED & !libc::CLONE_NEWNET,
            None => namespaces::UNSHARED,
        };
        // As root, a container starts from the lab's launcher thread and its template root,
        // which holds nothing of the host's: a container that needs its scratch directory or
        // its disk attaches them.
        let template = RootfsPlan::new(
            &lab.rootfs_mount_point(),
            &lab.workload_path(),
            self.busybox.as_deref(),
            None,
            &hostname,
            false,
        );
        // A container on the lab's layered image has a root of its own (an overlay), not the
        // template's: it builds it itself, as a rootless container does.
        let (launcher, started) = match userns || provisions.image.is_some() {
            true => (None, false),
            false => security.launcher(&template)?,
        };
        let mut provisions = provisions;
        if provisions.image.is_some() {
            provisions.upper = Some(Upper::make(
                &lab.overlay_dir()?.join(&name),
                mapped.as_ref().map(|m| (m.id, m.id)),
            )?);
        }
        if fresh || started {
            // Once per lab: compiling the seccomp profile, building the template root.
            timeline.mark("lab_setup");
        }
        let mut cgroup = lab.instance_cgroup(&name, limits)?;
        // Before the placement: on v1 the policy is one more cgroup for init to join.
        let devices = match cgroup.as_mut() {
            Some(cg) if !userns => lab.confine_devices(cg)?,
            _ if userns => format!("not in force: {ROOTLESS_DEVICES}"),
            _ => format!(
                "not in force: the lab has no cgroups ({})",
                lab.cgroup_problem().unwrap_or("none")
            ),
        };
        let placement = Placement::of(cgroup.as_ref())?;
        if cgroup.is_some() {
            timeline.mark("cgroup");
        }

        // Everything the child process needs, prepared while allocating is still safe.
        let caps = security.caps;
        let args = workload::argv(spec, REPORT_FD, CONTROL_FD, &provisions.given(true));
        let exec = Exec::new(rootfs::WORKLOAD_PATH.as_ref(), "workload", &args, &[]);
        let (pid, ends, sync) = match launcher {
            Some(launcher) => {
                let mut attach = Vec::new();
                if let Some(s) = &provisions.scratch {
                    attach.push((detached_tree(s.path())?, c"/scratch"));
                }
                // The disk is bound by its path, which no user but root (and the lab's) may
                // change (`isolab_resources::disks`, "Paths others open").
                if let Some(d) = &provisions.disk {
                    attach.push((detached_tree(d.path())?, c"/dev/vda"));
                }
                let (ends, mut fds) = child::pipes(None)?;
                if let Some(ns) = netns {
                    fds.join_netns(ns)?;
                }
                let job = Job {
                    fds,
                    placement,
                    plan: template,
                    unshared,
                    attach,
                    security: security.clone(),
                    caps,
                    mapped: mapped.clone(),
                    exec: SendExec(exec),
                };
                let pid = launcher
                    .run(move |stack| job.spawn(stack))
                    .ok_or_else(|| BackendError::Instance {
                        step: "the launcher thread".into(),
                        detail: "it has stopped".into(),
                    })?
                    .map_err(BackendError::sys("clone"))?;
                (pid, ends, None)
            }
            None => {
                let plan = RootfsPlan::new(
                    &lab.rootfs_mount_point(),
                    &lab.workload_path(),
                    self.busybox.as_deref(),
                    provisions.scratch.as_ref().map(|s| s.path()),
                    &hostname,
                    userns,
                )
                .with_disk(provisions.disk.as_ref().map(|d| d.path()))
                .with_overlay(
                    provisions
                        .image
                        .as_ref()
                        .zip(provisions.upper.as_ref())
                        .map(|(image, upper)| {
                            overlay::options(
                                &image.lowerdir(),
                                Some((&upper.upper(), &upper.work())),
                            )
                        }),
                );
                let alone = Alone {
                    userns,
                    unshared,
                    netns,
                    mapped: mapped.clone(),
                };
                spawn_alone(&alone, placement, &plan, &security, &caps, &exec)?
            }
        };
        let image = provisions.image.clone();
        let mut instance = Instance::new(Parts {
            backend: self.name().into(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup,
            ends,
            timeline,
            timeout: lab.timeout,
            cleanup: Vec::new(),
        });
        provisions.hand_to(lab, &mut instance);
        // The "image": everything the container's root holds.
        crate::note_image(
            &mut instance,
            image.as_deref(),
            "tmpfs root holding one static executable (the workload)",
        );
        instance.note(info::PROFILE, security.profile.name());
        if let Some(seccomp) = security.seccomp_note() {
            instance.note(info::SECCOMP_PROFILE, seccomp);
        }
        instance.note(
            info::CONTAINER_ROOT,
            container_root(userns, mapped.as_ref()),
        );
        instance.note(info::DEVICES, devices);
        // From here on, dropping `instance` on an error kills and reaps whatever was started.
        if let Some(lab_sync) = sync {
            let mut sync = UnixStream::from(lab_sync);
            sync.set_read_timeout(Some(lab.timeout))
                .map_err(BackendError::io("sync"))?;
            // Init waits for its uid/gid maps. If it failed instead, the socket closes, and
            // waiting for `ready` reports init's error line.
            if read_byte(&mut sync).is_some() {
                namespaces::write_id_maps(pid, getuid(), getgid()).map_err(|e| {
                    userns_refused(
                        "writing its uid/gid maps",
                        Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    )
                })?;
                sync.write_all(b"m").map_err(BackendError::io("sync"))?;
            }
        }
        Ok(instance)
    }
}

/// Why a rootless container has no device policy, and why it needs none.
const ROOTLESS_DEVICES: &str = "a lab without root may neither load the BPF program (cgroup v2) \
     nor write a devices cgroup (v1); in its user namespace the container can make no device \
     node, and its /dev holds only the host's null, zero, full, random, urandom and tty";

/// Why a root lab's containers keep the host's root, if they must; asked once per process.
fn mapped_root_refused() -> Option<&'static str> {
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
fn detached_tree(path: &Path) -> Result<OwnedFd, BackendError> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| BackendError::io("open_tree")(std::io::ErrorKind::InvalidInput.into()))?;
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
        return Err(BackendError::sys("open_tree the scratch directory")(
            Errno::last(),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// An [`Exec`] handed to the launcher thread. Its pointers point into its own heap strings,
/// which move with it, so another thread may use it.
struct SendExec(Exec);

// SAFETY: the raw pointers in `Exec` point into CStrings it owns (see above); nothing else
// refers to them.
unsafe impl Send for SendExec {}

/// One container start, handed to the launcher thread.
struct Job {
    fds: ChildFds,
    placement: Placement,
    plan: RootfsPlan,
    /// The namespaces init creates with `unshare` (all but the network's when it joins a link's).
    unshared: libc::c_int,
    /// Detached mounts of the host's (the scratch directory, the disk) and where they go.
    attach: Vec<(OwnedFd, &'static std::ffi::CStr)>,
    security: Arc<Security>,
    caps: CapPlan,
    mapped: Option<namespaces::MappedRoot>,
    exec: SendExec,
}

impl Job {
    /// **Launcher thread.** Clone init; it shares the lab's memory until it execs, and this
    /// thread sleeps meanwhile (see [`spawn_shared`]).
    fn spawn(self, stack: &mut Stack) -> Result<Pid, Errno> {
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
fn harden(
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
struct Alone {
    /// In a user namespace from its first step (rootless).
    userns: bool,
    /// The namespaces it creates with `unshare`.
    unshared: libc::c_int,
    /// The network namespace it joins instead of making one.
    netns: Option<OwnedFd>,
    /// A root lab's container: the uid its root becomes, last.
    mapped: Option<namespaces::MappedRoot>,
}

/// Start init from the lab's own thread: a rootless container (`userns`), or one whose root
/// is not the launcher's template. Returns its PID, the lab's pipe ends and, rootless, the
/// lab's end of the uid/gid map handshake.
fn spawn_alone(
    alone: &Alone,
    placement: Placement,
    plan: &RootfsPlan,
    security: &Security,
    caps: &CapPlan,
    exec: &Exec,
) -> Result<(Pid, ParentEnds, Option<OwnedFd>), BackendError> {
    let (lab_sync, child_sync) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(BackendError::sys("socketpair"))?;
    let userns = alone.userns;
    let (ends, mut fds) = child::pipes(userns.then_some(child_sync))?;
    if let Some(ns) = &alone.netns {
        fds.join_netns(
            ns.try_clone()
                .map_err(BackendError::io("dup the link's netns"))?,
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
        let mut stack = Stack::new().map_err(BackendError::sys("mmap"))?;
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
    Ok((pid, ends, userns.then_some(lab_sync)))
}

/// The error of a rootless container whose user namespace the kernel refused at `step` with
/// `e`: EPERM, EACCES or ENOSPC there mean a restriction on user namespaces, which is named with
/// its fix when one is set (see [`isolab_host::facts::userns_restriction`]).
fn userns_refused(step: &'static str, e: Errno) -> BackendError {
    let refused = matches!(
        e,
        Errno::EPERM | Errno::EACCES | Errno::ENOSPC | Errno::EUSERS
    );
    match isolab_host::facts::userns_restriction() {
        Some(why) if refused => BackendError::Unavailable {
            backend: "container".into(),
            reason: format!(
                "the kernel refused its user namespace at {step} ({e}): {why} (fix: {})",
                isolab_host::facts::userns_fix(&why)
            ),
        },
        _ => BackendError::sys(step)(e),
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
fn init(
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
