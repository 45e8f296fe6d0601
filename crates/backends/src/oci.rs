//! `oci:<runtime>`: the same workload in an OCI bundle, run by an OCI runtime — `runc` (what
//! Docker and containerd use underneath), `crun` (the same job in C), or gVisor's `runsc`.
//!
//! The Open Container Initiative runtime specification describes a container as a **bundle**: a
//! directory with the root file system (`rootfs/`) and a `config.json` saying which namespaces,
//! mounts, capabilities and limits to apply. isolab writes a bundle equivalent to its own
//! container (same namespaces plus cgroup, Docker's 14 capabilities, no_new_privs, a read-only
//! root holding only the workload; with `--profile docker` also Docker's masked and read-only
//! paths and the same seccomp profile, already resolved) and runs `<runtime> run` on it. The
//! difference in start-up between `container` and `oci:runc` is then the runtime's own work:
//! runc re-executes itself to set the container up, in Go, with many more safety steps.
//!
//! The runtime stays in the foreground as the container's parent until it exits, so it lives in
//! the instance's cgroup and its memory counts as part of the instance. Its container goes into
//! a child cgroup, `<instance>/<container id>`, which the runtime makes and removes; the
//! instance's cgroup keeps the limits and the figures (they count what is below them), so
//! nothing is lost when the runtime tidies up after itself.
//!
//! **Where the container goes** is the runtime's choice, made from the bundle's
//! `linux.cgroupsPath`, and on cgroup v1 it is made once per hierarchy — memory, pids, cpu,
//! devices, freezer, ... are separate trees, and the lab itself may sit at a different place in
//! each (a memory cgroup nested under a session's, a pids cgroup at the root). An absolute
//! path is read from each hierarchy's root: the instance's path in the memory hierarchy names,
//! in the pids hierarchy, a cgroup nowhere near the instance's `pids.max`. So the lab makes the
//! instance's cgroup in *every* hierarchy and starts the runtime in all of them
//! ([`isolab_resources::cgroup::Hierarchy::create_everywhere`]), and tells each runtime a path it reads
//! from there:
//!
//! * **runc** reads a *relative* path from its own cgroup, hierarchy by hierarchy: it is given
//!   `<container id>`, which is `<instance>/<container id>` everywhere.
//! * **crun** reads every path from the hierarchy's root. It is started in a cgroup namespace
//!   of its own, rooted at the instance's cgroup, and in a private mount namespace where each
//!   v1 hierarchy is mounted again: a mount made inside a cgroup namespace shows the
//!   namespace's root as `/`. Its `/<container id>` is then `<instance>/<container id>` too.
//!   The same step hides a "hybrid" machine's cgroup2 tree, which crun refuses (it cannot tell
//!   which tree to use when both hold controllers). The step is its own phase
//!   (`cgroup_namespace`).
//! * On **v2** there is one tree: both are given the absolute path of `<instance>/<container
//!   id>`.
//!
//! Whatever the path, the lab checks the result: at `ready` it reads each process's own cgroups
//! and refuses an instance whose processes are not under its limits
//! ([`isolab_resources::cgroup::in_force`]). What each runtime needs besides:
//!
//! * **runc**: extra fds reach the workload with `--preserve-fds 2` (the report and control
//!   pipes at 3 and 4).
//! * **runsc** (gVisor) does not pass extra fds, only the standard streams: the workload reports
//!   on its standard output and is released through its standard input. Its sandbox — the
//!   Sentry, a kernel written in Go serving the workload's system calls, and the Gofer, which
//!   opens files for it — are processes of its own; with `--ignore-cgroups` runsc leaves them in
//!   the instance's cgroup (in every hierarchy), where the lab's limits hold and its memory
//!   counts them. It
//!   intercepts the workload's system calls with `ptrace` here, or with KVM where the CPU has
//!   hardware virtualization (the `sandbox_platform` fact says which). It keeps its state under
//!   the lab's work directory.
//!
//! A runtime keeps state of its own that outlives its `run`: a state directory (`/run/runc/<id>`,
//! runsc's under the work directory) and cgroups in every hierarchy it knows (below the
//! instance's, which go with the instance). If the lab — or
//! the runtime — is killed, the workload, which is the runtime's child, not the lab's, would run
//! on. So the container is written into the lab's ledger before the runtime hears of it
//! ([`isolab_resources::ownership::Resource::OciContainer`]), and removed through the runtime's own
//! interface, `delete --force` (which kills what still runs), by the instance's teardown or,
//! after a crash, by the lab's guardian or the next lab.

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::provide::{DISK_INSIDE, SCRATCH_INSIDE};
use crate::{Availability, Backend, BackendError, Limits, Spec};
use isolab_container::capabilities;
use isolab_container::rootfs::{
    make_mounts_private, MASKED_PATHS, MASKED_SYS_PATHS, READONLY_PATHS,
};
use isolab_payload as workload;
use isolab_resources::image::overlay::{Mounted, Upper};
use isolab_resources::ownership::Resource;
use isolab_results::info;
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::{spawn_exec_with, BeforeExec, Streams};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec as OciSpec,
};
use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An OCI runtime backend.
#[derive(Debug)]
pub struct Oci {
    runtime: String,
    name: String,
    version: OnceLock<Option<String>>,
}

/// What a runtime needs to be run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// runc, and any runtime that takes runc's flags.
    Runc,
    /// crun.
    Crun,
    /// gVisor's runsc.
    Runsc,
}

impl Oci {
    /// The backend for the runtime binary `runtime` (looked up in PATH), named `oci:<runtime>`.
    pub fn new(runtime: &str) -> Oci {
        Oci {
            runtime: runtime.to_string(),
            name: format!("oci:{runtime}"),
            version: OnceLock::new(),
        }
    }

    /// `oci:runc`.
    pub fn runc() -> Oci {
        Oci::new("runc")
    }

    fn kind(&self) -> Kind {
        match self.runtime.as_str() {
            "crun" => Kind::Crun,
            "runsc" => Kind::Runsc,
            _ => Kind::Runc,
        }
    }

    pub(crate) fn runtime_path(&self) -> Option<PathBuf> {
        isolab_host::facts::find_program(&self.runtime)
    }

    /// The first line of `<runtime> --version`, once.
    fn version(&self, path: &Path) -> Option<String> {
        self.version
            .get_or_init(|| {
                let out = std::process::Command::new(path)
                    .arg("--version")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout);
                text.lines().next().map(|l| l.trim().to_string())
            })
            .clone()
    }

    /// The flags before the command: runsc's state directory, network and platform, and
    /// whether its Sentry applies the bundle's seccomp profile (it ignores it by default).
    pub(crate) fn global_args(&self, lab: &Lab, spec: &Spec) -> Vec<String> {
        match self.kind() {
            Kind::Runsc => {
                // gVisor's own network stack (netstack, in the Sentry) takes over the link the
                // lab made in the container's namespace, for the network kernels; the others
                // get none, as the other runtimes' containers get an empty namespace.
                let network = match spec.kernel.needs_network() {
                    true => "--network=sandbox",
                    false => "--network=none",
                };
                let mut args = vec![
                    format!("--root={}", lab.workdir().join("runsc").display()),
                    network.into(),
                    "--ignore-cgroups".into(),
                    format!("--platform={}", runsc_platform()),
                ];
                if lab.settings.profile.hardened() {
                    args.push("--oci-seccomp".into());
                }
                args
            }
            _ => Vec::new(),
        }
    }
}

/// The platform runsc intercepts the workload's system calls with: KVM where the CPU has
/// hardware virtualization (the Sentry then runs as a guest kernel, in ring 0 of a VM of its
/// own), else `ptrace` (every system call of the workload stops it and wakes the Sentry: slow,
/// but it works anywhere). Nested PVM emulates a guest's ring 0, so it counts as none.
fn runsc_platform() -> &'static str {
    if isolab_host::facts::KvmKind::detect().is_hardware()
        && fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    {
        "kvm"
    } else {
        "ptrace"
    }
}

/// What crun sees of the cgroup file systems on cgroup v1: every v1 hierarchy with the
/// instance's cgroup as its root, and no cgroup2 tree (see the module docs). Prepared by the
/// lab, entered by crun's process before it execs ([`CgroupView::enter`]).
struct CgroupView {
    /// A hybrid machine's cgroup2 mount, hidden.
    unified: Option<CString>,
    /// Each v1 hierarchy: its mount point and the options that mount it again.
    v1: Vec<(CString, CString)>,
}

impl CgroupView {
    fn of_instance() -> CgroupView {
        let c = |s: &[u8]| CString::new(s).ok();
        CgroupView {
            unified: isolab_resources::cgroup::unified_beside_v1()
                .and_then(|p| c(p.as_os_str().as_bytes())),
            v1: isolab_resources::cgroup::v1_mounts()
                .into_iter()
                .filter_map(|(at, options)| {
                    Some((c(at.as_os_str().as_bytes())?, c(options.as_bytes())?))
                })
                .collect(),
        }
    }

    /// **Child side**, crun on cgroup v1, already in the instance's cgroup in every hierarchy:
    /// a cgroup namespace rooted there, and a private mount namespace in which each v1
    /// hierarchy is mounted again — in a cgroup namespace a new mount of a hierarchy shows the
    /// namespace's root, the instance's cgroup, as its `/`. crun's `/<id>` is then
    /// `<instance>/<id>` in every hierarchy.
    fn enter(&self) -> Result<(), (&'static str, Errno)> {
        // SAFETY: unshare with flags; the child has its own file-system context (no CLONE_FS).
        if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) } != 0 {
            return Err((
                "unshare mount and cgroup namespaces for crun",
                Errno::last(),
            ));
        }
        // Private first, so that nothing below propagates back to the host's namespace.
        make_mounts_private().map_err(|e| ("make mounts private for crun", e))?;
        // crun refuses a "hybrid" machine whose cgroup2 tree holds a controller: it cannot
        // tell which tree to use. Without that mount it sees a pure v1 machine.
        if let Some(unified) = &self.unified {
            umount2(unified.as_c_str(), MntFlags::MNT_DETACH)
                .map_err(|e| ("hide cgroup2 from crun", e))?;
        }
        for (at, options) in &self.v1 {
            // The kernel refuses a second mount of the same hierarchy on the same mount point
            // (EBUSY): the old one goes first.
            umount2(at.as_c_str(), MntFlags::MNT_DETACH)
                .map_err(|e| ("unmount a cgroup hierarchy for crun", e))?;
            mount(
                Some(c"cgroup"),
                at.as_c_str(),
                Some(c"cgroup"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(options.as_c_str()),
            )
            .map_err(|e| {
                (
                    "mount a cgroup hierarchy rooted at the instance for crun",
                    e,
                )
            })?;
        }
        Ok(())
    }
}

impl Backend for Oci {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> &str {
        match self.kind() {
            Kind::Runc => "an equivalent OCI bundle run by runc (what Docker uses underneath)",
            Kind::Crun => "the same OCI bundle run by crun, a runtime written in C",
            Kind::Runsc => {
                "the same OCI bundle run by gVisor's runsc: the workload's system calls go to a kernel in user space (the Sentry)"
            }
        }
    }

    fn family(&self) -> isolab_results::Family {
        // gVisor's runsc runs the workload on a kernel of its own in user space (the Sentry),
        // which takes every system call: a sandbox. Other runtimes set up namespaces and cgroups
        // on the host's kernel, as Docker's runc does.
        if self.kind() == Kind::Runsc {
            isolab_results::Family::Sandbox
        } else {
            isolab_results::Family::Container
        }
    }

    /// gVisor up to its 2022-12-19 release (Debian 12's) refuses its network stack on kernels
    /// that show `net.core.rmem_default` in every network namespace (6.x): it takes that file
    /// as the sign of the host's namespace. Said before the run, not left to fail in it.
    fn supports(&self, _lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
        if self.kind() != Kind::Runsc || !kernel.needs_network() {
            return Ok(());
        }
        let Some(version) = self.runtime_path().and_then(|p| self.version(&p)) else {
            return Ok(());
        };
        match release_date(&version) {
            Some(date) if date <= 20221219 && rmem_default_in_every_netns() => Err(format!(
                "{version} decides whether it runs in the host's network namespace by looking for \
                 /proc/sys/net/core/rmem_default, which this kernel shows in every namespace: it \
                 refuses to start its network stack (install a newer gVisor)"
            )),
            _ => Ok(()),
        }
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if self.runtime_path().is_none() {
            let package = match self.kind() {
                Kind::Runsc => "runsc",
                _ => &self.runtime,
            };
            return Availability::Unavailable(format!(
                "{} is not installed (Debian/Ubuntu: sudo apt install {package})",
                self.runtime
            ));
        }
        if !nix::unistd::geteuid().is_root() {
            return Availability::Unavailable(format!(
                "isolab runs {} as root only (rootless runtimes need a delegated cgroup and a rootless bundle)",
                self.runtime
            ));
        }
        if let Err(why) = lab.security() {
            return Availability::Unavailable(why);
        }
        Availability::of_cgroups(lab)
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        Ok(self.launch(lab, spec, limits, Launch::Run)?.0)
    }

    fn restorer(&self) -> Option<&dyn crate::Restore> {
        (self.kind() == Kind::Runc).then_some(self as &dyn crate::Restore)
    }
}

/// How [`Oci::launch`] starts the container.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Launch<'a> {
    /// `run`, as any start.
    Run,
    /// `run` of a container that will be checkpointed: the workload reports on its standard
    /// streams (as under runsc), the only descriptors `runc restore` hands a restored container
    /// (see [`crate::criu_restore`]).
    Checkpointable,
    /// `restore` from CRIU's images in `images`, with runc's own files (CRIU's log and stats)
    /// in `work`.
    Restore {
        /// The checkpoint.
        images: &'a Path,
        /// runc's `--work-path`.
        work: &'a Path,
    },
}

impl Oci {
    /// Start a container: make its cgroup, bundle and ledger entry, and run the runtime in the
    /// foreground as the instance's main process — `run`, or `restore` from a checkpoint.
    /// Returns the instance and its container's id.
    pub(crate) fn launch(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        how: Launch<'_>,
    ) -> Result<(Instance, String), BackendError> {
        let mut timeline = Timeline::start();
        let security = lab.security().map_err(|reason| BackendError::Unavailable {
            backend: self.name.clone(),
            reason,
        })?;
        let name = lab.next_instance_name();
        // In every hierarchy: the runtime is started in the instance's cgroup everywhere, so
        // that where it puts its container is below the instance everywhere.
        let mut cgroup = lab.cgroup_everywhere(&name, limits)?;
        let mut placement = cgroup.placement()?;
        let kind = self.kind();
        // The lab's device policy over the runtime's container, whatever the runtime adds to
        // the bundle's (see `isolab_resources::cgroup::devices`). Not for gVisor, whose Sentry, in this
        // cgroup, serves the workload's devices itself and opens the host's /dev/kvm.
        let enforced = match kind {
            Kind::Runsc => None,
            _ => Some(
                lab.cgroups()?
                    .confine_runtime(&mut cgroup, &mut placement)?,
            ),
        };
        timeline.mark("cgroup");

        let bundle = lab.workdir().join(format!("oci-{name}"));
        let id = format!("isolab-{name}");
        let runtime = self
            .runtime_path()
            .ok_or_else(|| BackendError::Unavailable {
                backend: self.name.clone(),
                reason: format!("{} not found in PATH", self.runtime),
            })?;
        let global = self.global_args(lab, spec);
        // The container's own cgroup, `<instance>/<id>` in every hierarchy (runsc leaves its
        // sandbox in the instance's; see the module docs for how each runtime reads the path).
        let v1 = cgroup.version() == isolab_resources::cgroup::Version::V1;
        let container_cgroup = match (kind, v1) {
            (Kind::Runsc, _) => None,
            (Kind::Runc, true) => Some(id.clone()),
            (Kind::Crun, true) => Some(format!("/{id}")),
            (_, false) => cgroup.relative_path().map(|r| format!("{r}/{id}")),
        };
        // Written down before the runtime hears of it: whatever happens to the lab from here
        // on, the container is removed through the runtime.
        let container = lab.ledger().claim(Resource::OciContainer {
            runtime: runtime.clone(),
            global: global.clone(),
            id: id.clone(),
        })?;
        // runc on a hybrid machine puts its container in the unified tree at `/<id>`, from the
        // tree's root, not below the cgroup it was started in: the device policy must be there
        // (see `isolab_resources::cgroup::devices::unified_dir`). Claimed first: it is outside the lab's
        // subtree.
        let mut enforced = enforced;
        let unified = match (
            kind,
            v1,
            isolab_resources::cgroup::devices::unified_dir(Path::new(&id)),
        ) {
            (Kind::Runc, true, Some(dir)) => {
                let owned = lab.ledger().claim(Resource::Cgroup { path: dir.clone() })?;
                enforced = Some(lab.cgroups()?.confine_unified(&dir)?);
                Some(owned)
            }
            _ => None,
        };
        // Clean-up runs once the runtime has exited, whatever happened: forget the container
        // (deleting its state under the runtime's root), remove the directories the runtime made
        // in hierarchies the lab does not use, and the bundle.
        let mut provisions = lab.provide(spec, &name, None)?;
        if let Some(image) = provisions.image.clone() {
            // The bundle's root is the lab's image: its layers shared, a writable one on top.
            let mounted = fs::create_dir_all(bundle.join("rootfs"))
                .map_err(BackendError::io("create OCI bundle"))
                .and_then(|()| Ok(Upper::make(&bundle.join("rw"), None)?))
                .and_then(|upper| {
                    let root =
                        Mounted::mount(&bundle.join("rootfs"), &image.lowerdir(), Some(&upper))?;
                    Ok((root, upper))
                });
            match mounted {
                Ok((root, upper)) => {
                    provisions.root = Some(root);
                    provisions.upper = Some(upper);
                }
                Err(e) => {
                    let _ = fs::remove_dir_all(&bundle);
                    return Err(e);
                }
            }
        }
        let shared = Shared::of(&provisions);
        let peer_note = provisions.peer_note(lab);
        let image = provisions.image.clone();
        let cleanup = {
            let bundle = bundle.clone();
            move || {
                drop(container);
                drop(unified);
                // First what was mounted in the bundle, then the bundle.
                drop(provisions);
                let _ = fs::remove_dir_all(&bundle);
            }
        };
        let streams = match (kind, how) {
            (Kind::Runsc, _) | (_, Launch::Checkpointable | Launch::Restore { .. }) => {
                Streams::Standard
            }
            _ => Streams::Fixed,
        };
        let written = write_bundle(
            lab,
            &bundle,
            &id,
            spec,
            &security,
            container_cgroup,
            streams,
            &shared,
        );
        if let Err(e) = written {
            cleanup();
            return Err(e);
        }
        timeline.mark("bundle");

        let mut args = global;
        match how {
            Launch::Run | Launch::Checkpointable => args.push("run".into()),
            // In the foreground, as `run`: runc stays the restored container's parent, and
            // hands it its own standard streams (the lab's new pipes) in place of the
            // checkpointed ones (CRIU's --inherit-fd).
            Launch::Restore { images, work } => args.extend([
                "restore".into(),
                "--image-path".into(),
                images.to_string_lossy().into_owned(),
                "--work-path".into(),
                work.to_string_lossy().into_owned(),
            ]),
        }
        if streams == Streams::Fixed {
            // Hand fds 3 and 4 (report, control) through to the workload.
            args.extend(["--preserve-fds".into(), "2".into()]);
        }
        args.extend([
            "--bundle".into(),
            bundle.to_string_lossy().into_owned(),
            id.clone(),
        ]);
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        let exec = Exec::new(&runtime, &self.runtime, &args, &[("PATH", &path)]);
        let view = (kind == Kind::Crun && v1).then(CgroupView::of_instance);
        let enter = view.as_ref().map(|v| move || v.enter());
        let before: Option<(&'static str, BeforeExec)> = enter
            .as_ref()
            .map(|e| ("cgroup_namespace", e as BeforeExec));
        let (ends, fds) = child::pipes(None)?;
        let spawned = spawn_exec_with(0, &placement, &fds, &exec, streams, before);
        drop(placement);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                cleanup();
                return Err(BackendError::Sys {
                    step: "clone",
                    source: e,
                });
            }
        };
        let mut instance = Instance::new(Parts {
            backend: self.name.clone(),
            spec: *spec,
            main: pid,
            helpers: Vec::new(),
            cgroup: Some(cgroup),
            ends,
            timeline,
            timeout: lab.settings.timeout,
            cleanup: vec![Box::new(cleanup)],
        });
        if let Some(note) = peer_note {
            instance.at_end(note);
        }
        crate::note_image(
            &mut instance,
            image.as_deref(),
            "OCI bundle: config.json and a root holding one static executable",
        );
        instance.note(info::PROFILE, security.profile.name());
        if let Some(seccomp) = security.seccomp_note() {
            instance.note(info::SECCOMP_PROFILE, seccomp);
        }
        let policy = isolab_resources::cgroup::devices::summary();
        instance.note(
            info::DEVICES,
            match enforced {
                None => format!(
                    "OCI bundle (linux.resources.devices): {policy}; runsc runs with \
                     --ignore-cgroups: the workload reaches only the devices gVisor's own \
                     kernel implements"
                ),
                Some(how) => format!(
                    "OCI bundle (linux.resources.devices), put in force by {}, and {how}: \
                     {policy}",
                    self.runtime
                ),
            },
        );
        if let Some(v) = self.version(&runtime) {
            instance.note(info::RUNTIME_VERSION, v);
        }
        if kind == Kind::Runsc {
            instance.note(info::SANDBOX_PLATFORM, runsc_platform());
            // The workload's clock is the Sentry's, not the host's.
            instance.stamp_on_arrival();
        }
        Ok((instance, id))
    }
}

/// What the host shares with one container, as its bundle names it: the instance's scratch
/// directory and disk (host paths), and the network namespace of its link to the peer.
#[derive(Clone, Debug, Default)]
struct Shared {
    scratch: Option<PathBuf>,
    disk: Option<PathBuf>,
    /// A path the runtime opens to join the namespace: the lab's own descriptor of it, seen
    /// through `/proc` — valid as long as the lab keeps the link, which it does until the
    /// instance has ended.
    netns: Option<PathBuf>,
    /// The peer's address on that link.
    peer: Option<std::net::Ipv4Addr>,
    /// The root is the lab's image, whose libraries the workload loads.
    libs: bool,
}

impl Shared {
    fn of(p: &crate::provide::Provisions) -> Shared {
        use std::os::fd::{AsFd, AsRawFd};
        Shared {
            scratch: p.scratch.as_ref().map(|s| s.path().to_path_buf()),
            // The runtime binds the disk by its path: safe because no user but root (and the
            // lab's) may change a directory on it (`isolab_resources::disks`, "Paths others open").
            disk: p.disk.as_ref().map(|d| d.path().to_path_buf()),
            netns: p.link.as_ref().map(|l| {
                PathBuf::from(format!(
                    "/proc/{}/fd/{}",
                    std::process::id(),
                    l.ns.as_fd().as_raw_fd()
                ))
            }),
            peer: p.link.as_ref().map(|l| l.peer_ip),
            libs: p.image.is_some(),
        }
    }
}

/// The release date of a `runsc --version` line (`runsc version 0.0~20221219.0`,
/// `runsc version release-20240212.0`) as a number, 20221219.
fn release_date(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 8 && w.starts_with("20"))
        .and_then(|w| w.parse().ok())
}

/// Whether this kernel shows `net.core.rmem_default` inside a network namespace other than the
/// host's (asked once).
fn rmem_default_in_every_netns() -> bool {
    static SEEN: OnceLock<bool> = OnceLock::new();
    *SEEN.get_or_init(|| {
        isolab_resources::network::netns::Netns::new()
            .and_then(|ns| ns.run(|| Path::new("/proc/sys/net/core/rmem_default").exists()))
            .unwrap_or(false)
    })
}

/// Write `bundle/rootfs/workload` and `bundle/config.json`.
#[allow(clippy::too_many_arguments)]
fn write_bundle(
    lab: &Lab,
    bundle: &Path,
    id: &str,
    spec: &Spec,
    security: &isolab_container::profile::Security,
    cgroup_path: Option<String>,
    streams: Streams,
    shared: &Shared,
) -> Result<(), BackendError> {
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(&rootfs).map_err(BackendError::io("create OCI bundle"))?;
    // A hard link costs nothing and the root is mounted read-only, so the container cannot
    // modify the lab's copy through it. (On the lab's image, the image brings its own.)
    let exe = rootfs.join("workload");
    if !shared.libs && fs::hard_link(lab.workload_path(), &exe).is_err() {
        fs::copy(lab.workload_path(), &exe)
            .map_err(BackendError::io("copy workload into bundle"))?;
    }
    let oci = |e: oci_spec::OciSpecError| BackendError::External {
        program: "oci-spec".into(),
        detail: e.to_string(),
    };
    let config = config(shared, id, spec, security, cgroup_path, streams).map_err(oci)?;
    config.save(bundle.join("config.json")).map_err(oci)
}

/// The runtime configuration: oci-spec's defaults (those of `runc spec`: mounts for /proc, /dev,
/// /dev/pts, /dev/shm, /dev/mqueue, /sys) made equivalent to isolab's container, with the lab's
/// profile: Docker's masked and read-only paths and its seccomp profile, or none of them.
fn config(
    shared: &Shared,
    id: &str,
    spec: &Spec,
    security: &isolab_container::profile::Security,
    cgroup_path: Option<String>,
    streams: Streams,
) -> Result<OciSpec, oci_spec::OciSpecError> {
    let mut config = OciSpec::default();
    let caps: HashSet<Capability> = capabilities::DOCKER_DEFAULT
        .iter()
        .filter_map(|(_, name)| serde_json::from_value(serde_json::Value::from(*name)).ok())
        .collect();
    // Every set spelled out: a set left out is not empty but oci-spec's default (KILL,
    // AUDIT_WRITE, NET_BIND_SERVICE), and the inheritable and ambient sets would carry those
    // through the workload's execve — which isolab's container, like Docker, never does.
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let (report, control) = match streams {
        Streams::Fixed => (REPORT_FD, CONTROL_FD),
        Streams::Standard => (1, 0),
    };
    let process = ProcessBuilder::default()
        .terminal(false)
        .cwd("/")
        .args(
            std::iter::once("/workload".to_string())
                .chain(workload::argv(
                    spec,
                    report,
                    control,
                    &isolab_payload::Given {
                        scratch: shared.scratch.as_ref().map(|_| Path::new(SCRATCH_INSIDE)),
                        disk: shared.disk.as_ref().map(|_| Path::new(DISK_INSIDE)),
                        peer: shared.peer,
                        net: None,
                        libs: shared
                            .libs
                            .then_some(Path::new(isolab_resources::image::LIBS_INSIDE)),
                        tools: None,
                    },
                ))
                .collect::<Vec<_>>(),
        )
        .env(vec!["PATH=/".to_string()])
        .no_new_privileges(true)
        .capabilities(caps)
        .build()?;
    config.set_process(Some(process));
    config.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(true)
            .build()?,
    ));
    config.set_hostname(Some(id.to_string()));

    let mut mounts = config.mounts().clone().unwrap_or_default();
    // The instance's own directory and disk (see `crate::lab::Scratch`): nothing there can be
    // run, be setuid or be a device.
    let options = ["rbind", "rw", "nosuid", "nodev", "noexec"].map(String::from);
    for (source, destination) in [
        (&shared.scratch, SCRATCH_INSIDE),
        (&shared.disk, DISK_INSIDE),
    ] {
        if let Some(source) = source {
            mounts.push(
                MountBuilder::default()
                    .destination(destination)
                    .typ("bind")
                    .source(source)
                    .options(options.to_vec())
                    .build()?,
            );
        }
    }
    config.set_mounts(Some(mounts));

    let mut linux = config
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().expect("empty"));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    if let Some(path) = &shared.netns {
        // Join the namespace of the instance's link to the peer instead of making an empty one.
        for ns in namespaces
            .iter_mut()
            .filter(|n| n.typ() == LinuxNamespaceType::Network)
        {
            ns.set_path(Some(path.clone()));
        }
    }
    if !namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
    {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }
    linux.set_namespaces(Some(namespaces));
    // The limits are the instance cgroup's (the lab set them), above this one: none here, so
    // an OOM kill is counted where the lab reads it. Only the device policy, which the runtime
    // puts in force for its container's cgroup: without it a runtime that follows the
    // specification to the letter (crun) lets the container open every device.
    linux.set_cgroups_path(cgroup_path.map(PathBuf::from));
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .devices(device_rules()?)
            .build()?,
    ));
    let paths = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    if security.profile.hardened() {
        let mut masked = paths(&MASKED_PATHS);
        masked.extend(paths(&MASKED_SYS_PATHS));
        linux.set_masked_paths(Some(masked));
        linux.set_readonly_paths(Some(paths(&READONLY_PATHS)));
        if let Some(profile) = &security.seccomp {
            let seccomp = serde_json::from_value(profile.to_oci())
                .map_err(|e| oci_spec::OciSpecError::Other(e.to_string()))?;
            linux.set_seccomp(Some(seccomp));
        }
    } else {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    config.set_linux(Some(linux));
    Ok(config)
}

/// The device policy ([`isolab_resources::cgroup::devices::POLICY`]) as the OCI specification spells it:
/// a rule that denies everything (`a`, `rwm`), then what is allowed. Later rules win.
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, oci_spec::OciSpecError> {
    use isolab_resources::cgroup::devices::{access_letters, Kind, POLICY};
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(LinuxDeviceType::A)
        .access("rwm")
        .build()?;
    std::iter::once(Ok(deny_all))
        .chain(POLICY.iter().map(|rule| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(match rule.kind {
                    Kind::Block => LinuxDeviceType::B,
                    Kind::Char => LinuxDeviceType::C,
                })
                .access(access_letters(rule.access));
            if let Some(major) = rule.major {
                b = b.major(i64::from(major));
            }
            if let Some(minor) = rule.minor {
                b = b.minor(i64::from(minor));
            }
            b.build()
        }))
        .collect()
}

/// Property tests of the OCI configuration writer: whatever the workload, the profile and the
/// streams, the bundle's `config.json` is valid, survives a round trip, and says what isolab's
/// own container does.
#[cfg(test)]
mod properties {
    use super::*;
    use isolab_container::profile::{Profile, Security};
    use isolab_payload::Kernel;
    use proptest::prelude::*;

    prop_compose! {
        fn spec()(
            kernel in proptest::sample::select(Kernel::ALL.to_vec()),
            mib in any::<u64>(),
            iters in any::<u64>(),
            hold in any::<bool>(),
            seed in any::<u64>(),
        ) -> Spec {
            let mut s = Spec::new(kernel, mib, iters);
            s.hold = hold;
            s.seed = seed;
            s
        }
    }

    #[test]
    fn runsc_release_dates_are_read_from_both_version_styles() {
        assert_eq!(release_date("runsc version 0.0~20221219.0"), Some(20221219));
        assert_eq!(
            release_date("runsc version release-20240212.0"),
            Some(20240212)
        );
        assert_eq!(release_date("runc version 1.1.5"), None);
    }

    #[test]
    fn the_config_is_valid_and_equivalent_to_the_container() {
        let dir = std::env::temp_dir().join(format!("isolab-prop-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab::in_dir(&dir).unwrap();
        let profiles: Vec<Security> = Profile::ALL
            .iter()
            .map(|p| Security::prepare(*p, lab.settings.seccomp_profile.as_deref()).unwrap())
            .collect();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(128)
        });
        let cases = (
            spec(),
            0..profiles.len(),
            any::<bool>(),
            proptest::option::of("(/[a-z0-9_.-]{1,12}){1,4}"),
            any::<u32>(),
        );
        let result = runner.run(&cases, |(spec, profile, standard, cgroup, n)| {
            let id = format!("isolab-{}-{n}", lab.id());
            let security = &profiles[profile];
            let streams = if standard {
                Streams::Standard
            } else {
                Streams::Fixed
            };
            let scratch = (spec.kernel == Kernel::Io).then(|| lab.scratch_dir().join(&id));
            let shared = Shared {
                scratch: scratch.clone(),
                ..Shared::default()
            };
            let config = config(&shared, &id, &spec, security, cgroup.clone(), streams).unwrap();
            // What the runtime reads is JSON: it must come back the same.
            let json = serde_json::to_string(&config).unwrap();
            let back: OciSpec = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &config);

            let process = config.process().as_ref().unwrap();
            let args = process.args().as_ref().unwrap();
            prop_assert_eq!(args[0].as_str(), "/workload");
            let kernel_word = format!("kernel={}", spec.kernel.name());
            prop_assert!(args.iter().any(|a| a == &kernel_word));
            let report = if standard { "report=1" } else { "report=3" };
            prop_assert!(args.iter().any(|a| a == report), "{:?}", args);
            prop_assert_eq!(process.no_new_privileges(), Some(true));
            let caps = process.capabilities().as_ref().unwrap();
            for set in [caps.bounding(), caps.effective(), caps.permitted()] {
                prop_assert_eq!(
                    set.as_ref().unwrap().len(),
                    capabilities::DOCKER_DEFAULT.len()
                );
            }
            // As isolab's container: nothing inherited across execve, nothing ambient.
            prop_assert_eq!(caps.inheritable().as_ref().map(HashSet::len), Some(0));
            prop_assert_eq!(caps.ambient().as_ref().map(HashSet::len), Some(0));
            let json: serde_json::Value = serde_json::from_str(&json).unwrap();
            for set in ["inheritable", "ambient"] {
                prop_assert_eq!(
                    &json["process"]["capabilities"][set],
                    &serde_json::json!([]),
                    "{} is written, empty",
                    set
                );
            }
            prop_assert_eq!(config.root().as_ref().unwrap().readonly(), Some(true));
            prop_assert_eq!(config.hostname().as_deref(), Some(id.as_str()));

            let linux = config.linux().as_ref().unwrap();
            let namespaces = linux.namespaces().as_ref().unwrap();
            for ns in [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Cgroup,
            ] {
                prop_assert_eq!(namespaces.iter().filter(|n| n.typ() == ns).count(), 1);
            }
            prop_assert_eq!(linux.cgroups_path().clone(), cgroup.map(PathBuf::from));
            // The limits are the instance cgroup's, above the container's: none here; only the
            // container's device policy: deny all, then the policy's rules, in its order.
            let resources = linux.resources().as_ref().unwrap();
            let rules = resources.devices().as_ref().unwrap();
            prop_assert_eq!(
                rules.len(),
                1 + isolab_resources::cgroup::devices::POLICY.len()
            );
            prop_assert!(!rules[0].allow() && rules[0].typ() == Some(LinuxDeviceType::A));
            prop_assert_eq!(rules[0].access().as_deref(), Some("rwm"));
            for (rule, policy) in rules[1..]
                .iter()
                .zip(isolab_resources::cgroup::devices::POLICY)
            {
                let text = format!(
                    "{} {}:{} {}",
                    rule.typ().unwrap().as_str(),
                    rule.major().map_or("*".into(), |m| m.to_string()),
                    rule.minor().map_or("*".into(), |m| m.to_string()),
                    rule.access().as_deref().unwrap_or("")
                );
                prop_assert!(rule.allow());
                prop_assert_eq!(text, policy.v1_line());
            }
            let empty = LinuxResourcesBuilder::default()
                .devices(rules.clone())
                .build()
                .unwrap();
            prop_assert_eq!(resources, &empty, "no limit but the devices");
            let hardened = security.profile.hardened();
            prop_assert_eq!(linux.masked_paths().is_some(), hardened);
            prop_assert_eq!(linux.readonly_paths().is_some(), hardened);
            prop_assert_eq!(
                linux.seccomp().is_some(),
                hardened && security.seccomp.is_some()
            );

            let mounts: Vec<_> = config
                .mounts()
                .as_ref()
                .unwrap()
                .iter()
                .filter(|m| m.destination() == Path::new("/scratch"))
                .collect();
            prop_assert_eq!(mounts.len(), usize::from(spec.kernel == Kernel::Io));
            for m in mounts {
                prop_assert_eq!(m.source().as_deref(), scratch.as_deref());
                let options = m.options().clone().unwrap_or_default();
                for flag in ["nosuid", "nodev", "noexec"] {
                    prop_assert!(options.iter().any(|o| o == flag), "{:?}", options);
                }
            }
            Ok(())
        });
        drop(lab);
        std::fs::remove_dir_all(&dir).unwrap();
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
