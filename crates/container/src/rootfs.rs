//! The container's root file system.
//!
//! Everything happens inside a private mount namespace, so **no mount is ever visible on the
//! host** and none can leak: when the namespace's last user is gone, the kernel drops it and
//! every mount in it. The steps:
//!
//! 1. make every mount private (`MS_REC | MS_PRIVATE`), so nothing we mount propagates back to
//!    the host through shared mount peers (systemd makes `/` shared by default);
//! 2. mount a small tmpfs on the lab's (empty) root directory: the container's `/`, `nodev`
//!    and `nosuid` — no node there opens a device, no file there runs as its owner;
//! 3. fill it ([`RootfsPlan::populate`]): the workload executable (a read-only bind mount of the
//!    lab's copy — the container cannot modify it), a private `/dev` — a read-only tmpfs of
//!    its own with the usual few device nodes, the only mount where a node works — and empty
//!    `/proc`, `/tmp` and `/scratch` (where the `io` kernel's directory goes);
//! 4. `pivot_root` into it and detach the old root ([`RootfsPlan::pivot`]): the host's file
//!    system is now unreachable;
//! 5. what belongs to one container only: a fresh `/proc` for its PID namespace, its host name
//!    (in its UTS namespace);
//! 6. with Docker's profile, hide what `/proc` says about the host ([`Masks`]).
//!
//! Steps 1–4 are the same for every container of a lab, and step 4 is the slow one: detaching
//! the old root waits for an RCU grace period (every CPU must pass a quiescent point before the
//! kernel may free what it unmounted), ~0.1 ms here. So a lab root does them **once**, in a
//! template mount namespace ([`crate::launcher`]), and each container copies that namespace —
//! a handful of mounts — and does only steps 5 and 6. A rootless container (whose copy of a
//! root-owned namespace would be locked) still does all six.

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

/// Size limit of the root tmpfs. Its pages are charged to the memory cgroup of whoever writes
/// them: the container, or the lab for a template.
const ROOTFS_TMPFS_OPTIONS: &str = "mode=0755,size=64m";

/// `/dev`: a tmpfs of its own for the few nodes of [`DEVICES`], a handful of links and the
/// disk's mount point; read-only once they are made (see [`RootfsPlan::populate`]).
const DEV_TMPFS_OPTIONS: &str = "mode=0755,size=64k,nr_inodes=64";

/// The root of a container, tmpfs or overlay: nothing on it may act as a device node
/// (`nodev`) or a setuid program (`nosuid`). The nodes the container needs are on `/dev`.
const ROOT_FLAGS: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// A container's writable `/tmp` over a read-only template root.
const TMP_TMPFS_OPTIONS: &str = "mode=1777,size=64m";

/// Path of the workload inside the container.
pub const WORKLOAD_PATH: &str = "/workload";

/// Everything the container's first process needs to build its root, prepared before fork.
#[derive(Clone, Debug)]
pub struct RootfsPlan {
    root: CString,
    workload: CString,
    busybox: Option<CString>,
    scratch: Option<CString>,
    disk: Option<CString>,
    /// A directory of programs bound read-only at `/tools` (the field's tools, for `lab
    /// validate`: see `isolab_resources::tools`).
    tools: Option<CString>,
    /// The options of an overlay mount to use as the root instead of an empty tmpfs (the lab's
    /// layered image: see [`isolab_resources::image::overlay`]).
    overlay: Option<CString>,
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
            disk: None,
            tools: None,
            overlay: None,
            hostname: hostname.to_string(),
            bind_devices,
        }
    }

    /// This plan with an overlay of the lab's image as its root (`options` of the mount), when
    /// given.
    pub fn with_overlay(self, options: Option<String>) -> RootfsPlan {
        RootfsPlan {
            overlay: options.map(|o| CString::new(o).expect("paths have no NUL")),
            ..self
        }
    }

    /// This plan with the instance's disk bound at `/dev/vda`, when it has one.
    pub fn with_disk(self, disk: Option<&Path>) -> RootfsPlan {
        RootfsPlan {
            disk: disk.map(cpath),
            ..self
        }
    }

    /// This plan with `tools` (a host directory) bound read-only at `/tools`, when given.
    pub fn with_tools(self, tools: Option<&Path>) -> RootfsPlan {
        RootfsPlan {
            tools: tools.map(cpath),
            ..self
        }
    }

    /// **Child side**, in a new mount namespace: build the root, pivot into it, and give it
    /// what belongs to this container (steps 1–5). On error returns the step that failed.
    pub fn enter(&self) -> Result<(), (&'static str, Errno)> {
        self.populate()?;
        // procfs before the pivot: in a user namespace the kernel mounts a new procfs only
        // where a full one is already visible (the host's, until the old root is detached),
        // so that a fresh mount cannot reveal what an over-mount was hiding.
        mount_proc("proc").map_err(|e| ("mount /proc", e))?;
        self.pivot()?;
        sethostname(&self.hostname).map_err(|e| ("sethostname", e))
    }

    /// **Child side** (or the launcher thread, for a template): steps 1–3. Leaves the current
    /// directory in the new root.
    pub fn populate(&self) -> Result<(), (&'static str, Errno)> {
        let step = |name: &'static str| move |e: Errno| (name, e);
        // Modes below are meant literally; the lab's umask must not change them.
        umask(Mode::empty());
        make_mounts_private().map_err(step("make mounts private"))?;
        match &self.overlay {
            // The image's layers, shared with every other container on it, and a writable layer
            // of this container's own on top.
            Some(options) => mount(
                Some(c"overlay"),
                self.root.as_c_str(),
                Some(c"overlay"),
                ROOT_FLAGS,
                Some(options.as_c_str()),
            )
            .map_err(step("mount the image (overlay)"))?,
            None => mount(
                Some("tmpfs"),
                self.root.as_c_str(),
                Some("tmpfs"),
                ROOT_FLAGS,
                Some(ROOTFS_TMPFS_OPTIONS),
            )
            .map_err(step("mount root tmpfs"))?,
        }
        // Work relative to the new root from here on: no path needs to be built at run time.
        chdir(self.root.as_c_str()).map_err(step("chdir root"))?;
        let dir = |p: &str, mode: u32| mkdir(p, Mode::from_bits_truncate(mode));
        dir("proc", 0o555).map_err(step("mkdir /proc"))?;
        dir("dev", 0o755).map_err(step("mkdir /dev"))?;
        dir("tmp", 0o1777).map_err(step("mkdir /tmp"))?;

        // The image brings its own copy of the workload; the bare root gets the lab's.
        if self.overlay.is_none() {
            bind_file(&self.workload, "workload", true).map_err(step("bind workload"))?;
        }
        if let Some(busybox) = &self.busybox {
            dir("bin", 0o755).map_err(step("mkdir /bin"))?;
            bind_file(busybox, "bin/busybox", true).map_err(step("bind busybox"))?;
            symlinkat("busybox", AT_FDCWD, "bin/sh").map_err(step("link /bin/sh"))?;
        }
        // Programs the container may run but not change: read-only, and nosuid and nodev like
        // the rest of the root (a setuid bit there gives nothing).
        if let Some(tools) = &self.tools {
            dir("tools", 0o755).map_err(step("mkdir /tools"))?;
            mount(
                Some(tools.as_c_str()),
                "tools",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(step("bind /tools"))?;
            mount(
                None::<&str>,
                "tools",
                None::<&str>,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV,
                None::<&str>,
            )
            .map_err(step("make /tools read-only"))?;
        }
        // Where the `io` kernel's scratch directory is mounted, empty in every other container.
        dir("scratch", 0o755).map_err(step("mkdir /scratch"))?;
        if let Some(scratch) = &self.scratch {
            mount(
                Some(scratch.as_c_str()),
                "scratch",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(step("bind /scratch"))?;
            restrict(c"scratch").map_err(step("restrict /scratch"))?;
        }
        // /dev: a file system of its own, the one place where a device node works (the root
        // and everything else the container writes is `nodev`). Its nodes are made, then the
        // whole of it is made read-only, so that the container can add none. Docker leaves its
        // `/dev` writable and relies on the devices cgroup alone; here that cgroup
        // (`isolab_resources::cgroup::devices`) is a second wall, not the only one.
        mount(
            Some("tmpfs"),
            "dev",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(DEV_TMPFS_OPTIONS),
        )
        .map_err(step("mount /dev"))?;
        self.make_devices().map_err(step("populate /dev"))?;
        // Where a disk kernel finds its disk, as in a VM; empty, except where a disk is bound.
        touch("dev/vda").map_err(step("make /dev/vda"))?;
        if let Some(disk) = &self.disk {
            bind_file(disk, "dev/vda", false).map_err(step("bind the disk"))?;
            restrict(c"dev/vda").map_err(step("restrict the disk"))?;
        }
        // Only the tmpfs at /dev becomes read-only: the mounts on its files (the disk, the
        // host's nodes in a user namespace) keep their own flags.
        mount(
            None::<&str>,
            "dev",
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(step("make /dev read-only"))?;
        Ok(())
    }

    /// **Child side**, from inside the new root (step 4). pivot_root(".", "."): the new root
    /// becomes "/", and the old root is stacked on top of it at the same place; unmounting "."
    /// then removes the old root (and with it every host mount) from this namespace. This avoids
    /// needing a directory to park the old root in.
    pub fn pivot(&self) -> Result<(), (&'static str, Errno)> {
        let step = |name: &'static str| move |e: Errno| (name, e);
        pivot_root(".", ".").map_err(step("pivot_root"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(step("detach old root"))?;
        chdir("/").map_err(step("chdir /"))
    }

    /// **Launcher thread.** Make the pivoted root read-only: every container of the lab gets a
    /// copy of this mount, and the copies share one tmpfs, so none of them may write to it.
    pub fn seal() -> Result<(), (&'static str, Errno)> {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| ("make the template root read-only", e))
    }

    /// **Child side**, in the container's own mount and UTS namespaces, its root copied from the
    /// launcher's template (step 5): a fresh procfs, which shows only the processes of the
    /// container's PID namespace; a writable `/tmp` over the read-only template; the host name.
    pub fn finish(&self) -> Result<(), (&'static str, Errno)> {
        let step = |name: &'static str| move |e: Errno| (name, e);
        mount_proc("/proc").map_err(step("mount /proc"))?;
        mount(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(TMP_TMPFS_OPTIONS),
        )
        .map_err(step("mount /tmp"))?;
        sethostname(&self.hostname).map_err(step("sethostname"))
    }

    /// True when a template built from `other` would serve this plan (same files, same devices).
    pub fn same_root(&self, other: &RootfsPlan) -> bool {
        self.root == other.root
            && self.workload == other.workload
            && self.busybox == other.busybox
            && self.scratch == other.scratch
            && self.disk == other.disk
            && self.tools == other.tools
            && self.overlay == other.overlay
            && self.bind_devices == other.bind_devices
    }

    /// This plan for another container: the same root, another host name.
    pub fn with_hostname(&self, hostname: &str) -> RootfsPlan {
        RootfsPlan {
            hostname: hostname.to_string(),
            ..self.clone()
        }
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

/// Files under `/proc` Docker hides from containers by mounting `/dev/null` over them (moby's
/// default `maskedPaths`): the host's physical memory (`kcore`), the kernel keys of every user
/// (`keys`), timer and scheduler internals that leak what other processes do (`timer_list`,
/// `sched_debug`, ...). Directories of the list (`acpi`, `asound`, `scsi`) get an empty
/// read-only tmpfs instead. A path this kernel does not have is skipped. Docker's list also
/// names `/sys/firmware` and `/sys/devices/virtual/powercap`; isolab's container mounts no
/// `/sys` at all, so those are hidden already.
pub const MASKED_PATHS: [&str; 9] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
];

/// Docker's `maskedPaths` under `/sys`, for the OCI bundles whose runtimes mount a `/sys`.
pub const MASKED_SYS_PATHS: [&str; 2] = ["/sys/firmware", "/sys/devices/virtual/powercap"];

/// Paths under `/proc` Docker makes read-only (moby's default `readonlyPaths`): kernel tunables
/// (`sys`: writing `/proc/sys/kernel/...` would change the host's kernel, which the container
/// shares), the magic SysRq trigger (`sysrq-trigger`: reboot the host), and what drivers expose
/// (`bus`, `fs`, `irq`). Each is bound onto itself and the bind made read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's masked and read-only paths, prepared once per lab ([`MASKED_PATHS`],
/// [`READONLY_PATHS`]).
///
/// Which of them this kernel's procfs has, and whether each is a file or a directory, is the
/// same in every container (procfs shows one kernel), so the lab looks once, in its own
/// `/proc`, and a container mounts without looking: a `stat` per path saved, and never a bind
/// mount that fails (a failed bind has already cloned its source, and freeing that clone waits
/// for an RCU grace period, ~60 µs here).
#[derive(Clone, Debug)]
pub struct Masks {
    /// Existing masked paths, and whether each is a directory.
    masked: Vec<(CString, bool)>,
    /// Existing read-only paths.
    readonly: Vec<CString>,
}

impl Default for Masks {
    fn default() -> Self {
        let c = |p: &str| CString::new(p).expect("no NUL");
        let kind = |p: &str| std::fs::metadata(p).ok().map(|m| m.is_dir());
        Masks {
            masked: MASKED_PATHS
                .iter()
                .filter_map(|p| Some((c(p), kind(p)?)))
                .collect(),
            readonly: READONLY_PATHS
                .iter()
                .filter(|p| kind(p).is_some())
                .map(|p| c(p))
                .collect(),
        }
    }
}

impl Masks {
    /// **Child side**, in the container's fresh `/proc`: apply the masks.
    pub fn apply(&self) -> Result<(), (&'static str, Errno)> {
        for (path, is_dir) in &self.masked {
            if *is_dir {
                // A directory: cover it with an empty, read-only tmpfs.
                mount(
                    Some("tmpfs"),
                    path.as_c_str(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("size=0"),
                )
                .map_err(|e| ("mask a /proc directory", e))?;
            } else {
                // /dev/null over a file: it reads as empty and cannot be written.
                mount(
                    Some("/dev/null"),
                    path.as_c_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| ("mask a /proc file", e))?;
            }
        }
        for path in &self.readonly {
            // A read-only bind takes two calls: the kernel ignores MS_RDONLY on the first.
            mount(
                Some(path.as_c_str()),
                path.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| ("bind a /proc path", e))?;
            mount(
                None::<&str>,
                path.as_c_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| ("make a /proc path read-only", e))?;
        }
        Ok(())
    }
}

/// **Child side.** Make the bind mount at `target` `nosuid`, `nodev` and `noexec`: what the
/// container writes there (its scratch directory, the one path it shares with the host) cannot
/// be a setuid program, a usable device node or anything to run, for anyone who reaches it
/// through this mount. Flags of a bind mount change only with a second call, a remount.
pub fn restrict<P: ?Sized + nix::NixPath>(target: &P) -> Result<(), Errno> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
}

/// **Child side**, in a new mount namespace: make every mount private (`MS_REC | MS_PRIVATE`),
/// so that what is mounted or unmounted here never propagates to the host's namespace through
/// shared peers (systemd makes `/` shared by default).
pub fn make_mounts_private() -> Result<(), Errno> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

/// A fresh procfs at `at`: it shows only the processes of the caller's PID namespace.
fn mount_proc(at: &str) -> Result<(), Errno> {
    mount(
        Some("proc"),
        at,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
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
