//! # isolab-container
//!
//! isolab's own container runtime, built directly on the kernel's primitives.
//!
//! A container is not a thing the kernel knows about. It is an ordinary process that was given
//! private namespaces ([`namespaces`]), a private root file system ([`rootfs`]), fewer privileges
//! ([`capabilities`]), a filter on its system calls ([`seccomp`]), resource limits and a device
//! policy (a cgroup: `isolab_resources::cgroup` and `isolab_resources::cgroup::devices`), and a
//! session of its own with no terminal (`isolab_spawn::child::new_session`). This crate puts
//! those together in the order they must happen, in one child process, each step stamped as its
//! own start-up phase:
//!
//! ```text
//!  launcher ── clone(CLONE_NEWPID) ──► init, PID 1 of a new PID namespace   fork
//!   (see launcher.rs)                   │ join the instance's cgroup
//!                                       │ unshare(mount, uts, ipc, net, cgroup) namespaces
//!                                       │ /proc, /tmp, host name (root: a     rootfs
//!                                       │   copy of the lab's template)
//!                                       │ Docker's masked, read-only paths    masked_paths
//!                                       │ root of its own: a user namespace   userns
//!                                       │ drop capabilities, no_new_privs     capabilities
//!                                       │ seccomp filter                      seccomp
//!                                       └ exec /workload                      ready
//! ```
//!
//! As root, containers are cloned by the lab's **launcher thread**, which did once what is the
//! same for all of them — their root file system, and loading Docker's seccomp profile — see
//! [`launcher`]. Once init has done everything that needs the host's root, it becomes a uid of
//! its own in a user namespace of its own, root inside and nobody outside
//! ([`namespaces::MappedRoot`]). Without root the lab clones init itself, with `CLONE_NEWUSER` too, writes its
//! uid/gid maps while init waits, and init builds its own root (`pivot_root`) and loads the
//! whole filter: a rootless container cannot use a template owned by the real root.
//! [`profile`] says which of the layers a lab applies (`--profile minimal|docker`).
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

//! # Reading order
//!
//! [`start`] is the container's life from `clone` to `exec`, step by step; each step is one
//! module: [`namespaces`], [`rootfs`], [`capabilities`], [`seccomp`] (with [`profile`], which
//! layers a lab applies); [`launcher`] is the thread that does once, for every container of a
//! lab, what is the same for all of them. Its cgroup and device policy are the host's resources
//! (`isolab_resources::cgroup`); how its first process is born in that cgroup is `isolab_spawn`.

pub mod capabilities;
pub mod launcher;
pub mod namespaces;
pub mod profile;
pub mod rootfs;
pub mod seccomp;
pub mod start;
