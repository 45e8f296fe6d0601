//! The container's root file system, built fresh for every instance.
//!
//! Everything happens inside the container's own mount namespace, so **no mount is ever visible
//! on the host** and none can leak: when the container's last process exits, the kernel drops
//! the namespace and every mount in it. The steps:
//!
//! 1. make every mount private (`MS_REC | MS_PRIVATE`), so nothing we mount propagates back to
//!    the host through shared mount peers (systemd makes `/` shared by default);
//! 2. mount a small tmpfs on the lab's (empty) root directory: the container's `/`;
//! 3. fill it: the workload executable (a read-only bind mount of the lab's copy — the container
//!    cannot modify it), `/proc`, a private `/dev` with the usual few device nodes, `/tmp`;
//! 4. `pivot_root` into it and detach the old root: the host's file system is now unreachable;
//! 5. set the container's host name (in its UTS namespace).

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, umask, Mode, SFlag};
use nix::unistd::{chdir, mkdir, pivot_root, sethostname, symlinkat};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Device nodes every container gets: (name inside, host path, major, minor).
const DEVICES: [(&str, &str, u64, u64); 6] = [
    ("dev/null", "/dev/null", 1, 3),
    ("dev/zero", "/dev/zero", 1, 5),
    ("dev/full", "/dev/full", 1, 7),
    ("dev/random", "/dev/random", 1, 8),
    ("dev/urandom", "/dev/urandom", 1, 9),
    ("dev/tty", "/dev/tty", 5, 0),
];

/// Symbolic links every container's `/dev` has.
const DEV_LINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "dev/fd"),
    ("/proc/self/fd/0", "dev/stdin"),
    ("/proc/self/fd/1", "dev/stdout"),
    ("/proc/self/fd/2", "dev/stderr"),
];

/// Size limit of the root tmpfs. Its pages are charged to the container's memory cgroup.
const ROOTFS_TMPFS_OPTIONS: &str = "mode=0755,size=64m";

/// Path of the workload inside the container.
pub const WORKLOAD_PATH: &str = "/workload";

/// Everything the container's first process needs to build its root, prepared before fork.
#[derive(Debug)]
pub struct RootfsPlan {
    root: CString,
    workload: CString,
    busybox: Option<CString>,
    scratch: Option<CString>,
    hostname: String,
    /// In a user namespace device nodes cannot be created (mknod needs `CAP_MKNOD` in the
    /// initial namespace), so the host's nodes are bind-mounted instead.
    bind_devices: bool,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

impl RootfsPlan {
    /// Plan a root at `root` (an empty host directory) holding `workload`, plus busybox and a
    /// scratch directory when given.
    pub fn new(
        root: &Path,
        workload: &Path,
        busybox: Option<&Path>,
        scratch: Option<&Path>,
        hostname: &str,
        bind_devices: bool,
    ) -> RootfsPlan {
        RootfsPlan {
            root: cpath(root),
            workload: cpath(workload),
            busybox: busybox.map(cpath),
            scratch: scratch.map(cpath),
            hostname: hostname.to_string(),
            bind_devices,
        }
    }

    /// **Child side**, in the new mount namespace: build the root and pivot into it. On error
    /// returns the step that failed.
    pub fn enter(&self) -> Result<(), (&'static str, Errno)> {
        let step = |name: &'static str| move |e: Errno| (name, e);
        // Modes below are meant literally; the lab's umask must not change them.
        umask(Mode::empty());
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(step("make mounts private"))?;
        mount(
            Some("tmpfs"),
            self.root.as_c_str(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID,
            Some(ROOTFS_TMPFS_OPTIONS),
        )
        .map_err(step("mount root tmpfs"))?;
        // Work relative to the new root from here on: no path needs to be built at run time.
        chdir(self.root.as_c_str()).map_err(step("chdir root"))?;
        let dir = |p: &str, mode: u32| mkdir(p, Mode::from_bits_truncate(mode));
        dir("proc", 0o555).map_err(step("mkdir /proc"))?;
        dir("dev", 0o755).map_err(step("mkdir /dev"))?;
        dir("tmp", 0o1777).map_err(step("mkdir /tmp"))?;

        bind_file(&self.workload, "workload", true).map_err(step("bind workload"))?;
        if let Some(busybox) = &self.busybox {
            dir("bin", 0o755).map_err(step("mkdir /bin"))?;
            bind_file(busybox, "bin/busybox", true).map_err(step("bind busybox"))?;
            symlinkat("busybox", AT_FDCWD, "bin/sh").map_err(step("link /bin/sh"))?;
        }
        if let Some(scratch) = &self.scratch {
            dir("scratch", 0o1777).map_err(step("mkdir /scratch"))?;
            mount(
                Some(scratch.as_c_str()),
                "scratch",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(step("bind /scratch"))?;
        }
        self.make_devices().map_err(step("populate /dev"))?;

        // A fresh procfs shows only the processes of the container's PID namespace.
        mount(
            Some("proc"),
            "proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(step("mount /proc"))?;

        // pivot_root(".", "."): the new root becomes "/", and the old root is stacked on top of it
        // at the same place; unmounting "." then removes the old root (and with it every host
        // mount) from this namespace. This avoids needing a directory to park the old root in.
        pivot_root(".", ".").map_err(step("pivot_root"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(step("detach old root"))?;
        chdir("/").map_err(step("chdir /"))?;
        sethostname(&self.hostname).map_err(step("sethostname"))?;
        Ok(())
    }

    fn make_devices(&self) -> Result<(), Errno> {
        for (inside, host, major, minor) in DEVICES {
            if self.bind_devices {
                touch(inside)?;
                mount(
                    Some(host),
                    inside,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )?;
            } else {
                let dev = nix::sys::stat::makedev(major, minor);
                mknod(inside, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), dev)?;
            }
        }
        for (target, link) in DEV_LINKS {
            symlinkat(target, AT_FDCWD, link)?;
        }
        Ok(())
    }
}

/// Create an empty file to mount on.
fn touch(path: &str) -> Result<(), Errno> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o755),
    )?;
    drop(fd);
    Ok(())
}

/// Bind-mount the host file `src` at `dst` (relative to the current directory), read-only when
/// asked. A read-only bind takes two calls: the kernel ignores `MS_RDONLY` on the first.
fn bind_file(src: &CString, dst: &str, read_only: bool) -> Result<(), Errno> {
    touch(dst)?;
    mount(
        Some(src.as_c_str()),
        dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    if read_only {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
    }
    Ok(())
}
