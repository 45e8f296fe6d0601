//! # A container runtime, in seven steps
//!
//! A container is not something the kernel knows about. It is an ordinary process that its
//! runtime started with private **namespaces** (what it can see), its own **root file system**,
//! a **cgroup** (what it may use) and fewer **capabilities** (what it may do). This program is
//! such a runtime, written one step at a time in `labs/container/1-run` … `7-caps`:
//!
//! ```text
//!  runtime (in the cgroup lab made)          container
//!  ── 6 write the memory limit
//!  ── 3 unshare(CLONE_NEWPID)
//!  ── 1 fork ────────────────────────────────► child (PID 1 of the new PID namespace)
//!  ── 1 waitpid                                ── 2,4,5 unshare(mount, UTS, network)
//!     exit with the child's status             ── 2 mounts private
//!                                              ── 4 host name, fresh proc in --rootfs
//!                                              ── 2 pivot_root into --rootfs
//!                                              ── 7 drop capabilities, no_new_privs
//!                                              ── 1 exec /workload
//! ```
//!
//! `lab` starts it with the command line in `labkit::container` (see `labs/abi.md`), and file
//! descriptors 3 and 4 open for the workload: the runtime leaves them alone, the workload
//! inherits them through `fork` and `exec`, and `lab` reads the workload's marker lines on fd 3.
//!
//! `lab` starts it as root *of a user namespace of its own*, as rootless Podman does: it may
//! do all of the above to the namespaces it creates, and nothing to the host (`abi.md`).
//! The runtime adds its own phase edges there ([`Report::phase`]: `started`, `limits`, `child`,
//! `namespaces`, `rootfs`, `caps`), so `lab` can show where the time of *your* runtime goes
//! beside its own. (The lab itself stamps `cgroup`, `bundle`, and `fork` and `exec` for starting
//! your runtime; the workload stamps `ready`.)
//!
//! This crate is one step of the track: the steps before it are written, and each step still
//! to write is a `TODO(step n)` comment with a `report.todo(n, …)` call where its code goes.
//! `lab check` reports a step whose `report.todo` is still there as "not yet": write the step
//! and remove that call. The next step's crate holds this step's solution.

// The skeleton imports what the finished runtime uses.
#![allow(unused_imports, unused_mut)]

use labkit::container::Request;
use labkit::Report;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, execv, fork, pivot_root, sethostname, ForkResult};
use std::ffi::CString;
use std::path::PathBuf;

fn main() {
    let report = Report;
    // The first phase edge of your own: everything since lab's `exec` of this program was the
    // kernel and the Rust runtime loading it.
    report.phase("started");
    let request = Request::from_args();
    limit_memory(&request, report);
    pid_namespace(report);
    // fork: the child is a copy of this process. This program has one thread, so the copy is
    // complete (in a multi-threaded program only the forking thread would survive in the child).
    // SAFETY: single-threaded here; the child only runs `container`, which ends in exec or exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => container(&request, report),
        Ok(ForkResult::Parent { child }) => {
            // A runtime waits for its container and hands on how it ended, so that whoever
            // started the runtime (here: lab, for Docker: containerd) learns the exit status.
            let code = match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => code,
                Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
                Ok(_) | Err(_) => 1,
            };
            std::process::exit(code);
        }
        Err(e) => fail(report, "fork", e),
    }
}

/// **In the child.** Make the container around this process, then become the workload.
fn container(request: &Request, report: Report) -> ! {
    report.phase("child");
    if let Err(e) = unshare(child_namespaces()) {
        fail(report, "unshare", e);
    }
    report.phase("namespaces");
    private_mounts(report);
    hostname_and_proc(request, report);
    let program = enter_root(request, report);
    network(report);
    report.phase("rootfs");
    drop_capabilities(request, report);
    report.phase("caps");
    exec(&program, &request.command, report)
}

/// The namespaces the child makes for itself with `unshare`. It stays the same process and
/// simply gets private copies of these parts of the kernel's state.
fn child_namespaces() -> CloneFlags {
    let mut flags = CloneFlags::empty();
    // A mount table of its own: mounts made from now on are invisible to the host.
    flags |= CloneFlags::CLONE_NEWNS;
    // A host name of its own: sethostname changes only the container's.
    flags |= CloneFlags::CLONE_NEWUTS;
    // A network stack of its own: only a loopback interface, down, and no route out.
    flags |= CloneFlags::CLONE_NEWNET;
    flags
}

/// Step 1: replace this process with the workload. `exec` keeps the PID, the namespaces, the
/// root, the cgroup and the open file descriptors (3 and 4, which the workload needs); it
/// returns only on failure.
fn exec(program: &std::path::Path, command: &[String], report: Report) -> ! {
    let path = CString::new(program.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
    let args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_str()).expect("no NUL in an argument"))
        .collect();
    let e = execv(&path, &args).unwrap_err();
    fail(report, "exec", e)
}

/// Step 2: give the container its own root file system, `request.rootfs`, and make the
/// host's unreachable. Returns the path to exec.
///
/// `chroot` is not enough: it only changes where *this process* starts resolving `/`, while the
/// host's root stays mounted in its mount namespace. A process with `CAP_SYS_CHROOT` (a
/// container's root keeps it) escapes with a second `chroot` into a subdirectory followed by
/// enough `chdir("..")`. `pivot_root` makes the new root *the namespace's* root, and unmounting
/// the old one removes the host's file system from the namespace altogether.
fn enter_root(request: &Request, report: Report) -> PathBuf {
    let step = |name: &'static str| move |e: Errno| fail(report, name, e);
    // pivot_root wants the new root to be a mount point: bind-mount the directory onto itself,
    // with what is mounted inside it (MS_REC): the container's /proc, from step 4.
    mount(
        Some(&request.rootfs),
        &request.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap_or_else(step("bind the root"));
    chdir(&request.rootfs).unwrap_or_else(step("chdir to the root"));
    // pivot_root(".", "."): the new root becomes `/`, and the old root is stacked on top of it;
    // detaching "." then unmounts the old root, and with it every host mount.
    pivot_root(".", ".").unwrap_or_else(step("pivot_root"));
    umount2(".", MntFlags::MNT_DETACH).unwrap_or_else(step("unmount the old root"));
    chdir("/").unwrap_or_else(step("chdir /"));
    PathBuf::from(&request.command[0])
}

/// Step 2, first: systemd makes `/` a *shared* mount, and a mount made under a shared one
/// propagates to its peers — back into the host's mount namespace. Make every mount of our new
/// namespace private before mounting anything.
fn private_mounts(report: Report) {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .unwrap_or_else(|e| fail(report, "make mounts private", e));
}

/// Step 3: a new PID namespace for the children of this process. `unshare(CLONE_NEWPID)` does
/// not move the caller (its PID cannot change); the *next* child it forks is PID 1 of the new
/// namespace, and when that PID 1 exits the kernel kills everything else in it.
fn pid_namespace(report: Report) {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        fail(report, "unshare pid", e);
    }
}

/// Step 4: the container's host name, and a `/proc` of its own PID namespace. A `/proc` mounted
/// by a process of the new namespace lists only that namespace's processes.
///
/// It is mounted into the new root *before* `pivot_root`, at `<rootfs>/proc`. This runtime is
/// root only of a user namespace (`lab` starts it so), and there the kernel lets it mount a new
/// procfs only while a complete one is visible in its mount namespace: a procfs shows things a
/// mount over part of it may be hiding (`mnt_already_visible` in the kernel). After the pivot
/// the host's `/proc` is gone, and the mount fails with EPERM. (runc and crun mount every mount
/// of a container, `/proc` included, into the new root before they pivot, for the same reason.)
fn hostname_and_proc(request: &Request, report: Report) {
    sethostname(&request.hostname).unwrap_or_else(|e| fail(report, "sethostname", e));
    mount(
        Some("proc"),
        &request.rootfs.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .unwrap_or_else(|e| fail(report, "mount /proc", e));
}

/// Step 5: the network namespace is created with the others (see [`child_namespaces`]); there is
/// nothing more to do here, because a new network namespace already holds only `lo`. A real
/// runtime would now create a veth pair and move one end in.
fn network(report: Report) {
    let _ = report;
}

/// Step 6: limit the memory of everything in our cgroup. `lab` created the cgroup and started
/// this runtime in it; the container's processes inherit it. A limit is one file to write.
fn limit_memory(request: &Request, report: Report) {
    let _ = request;
    // TODO(step 6): write request.memory_limit into the cgroup request.cgroup.
    report.todo(6, "a memory limit");
}

/// Step 7: keep only `request.caps` of root's capabilities, and forbid gaining new privileges.
///
/// Order matters: dropping from the bounding set needs `CAP_SETPCAP`, which the last step may
/// remove. The bounding set is what limits root after `exec`: an exec'd program run as root
/// gets every capability of the bounding set back unless `no_new_privs` is set.
fn drop_capabilities(request: &Request, report: Report) {
    let _ = request;
    // TODO(step 7): keep only request.caps (bounding, effective, permitted sets) and set
    // no_new_privs.
    report.todo(7, "drop capabilities");
}

/// Tell `lab` which step failed and why, and end this process.
fn fail(report: Report, step: &str, e: Errno) -> ! {
    report.error(step, e.desc());
    std::process::exit(127)
}
