//! `student:container` and `student:vmm`: the container runtime and the VMM *you* built in the
//! exercises (`labs/container/`, `labs/vmm/`), run exactly like the lab's own backends, so that
//! `lab run startup --backends container,oci:runc,student:container` compares them phase by
//! phase.
//!
//! # The ABI between the lab and your program (`labs/abi.md` says the same for students)
//!
//! The lab creates the instance's cgroup, then starts your program *in* it (so its memory, and
//! that of everything it starts, is the instance's) with:
//!
//! * fd 0 and 1 on `/dev/null`, fd 2 a pipe the lab shows when something fails;
//! * **fd 3**, the report pipe: marker lines (`isolab phase name=… t=…`, see
//!   `isolab_kernels::wire`). The workload writes its own there; your program may add its phase
//!   edges, stamped with `CLOCK_MONOTONIC` — the lab sorts every edge by time;
//! * **fd 4**, the control pipe: the lab's go-ahead for a holding or sleeping workload;
//! * a command line:
//!
//! ```text
//! container:  RUNTIME --rootfs DIR --hostname NAME --cgroup DIR [--memory-limit BYTES]
//!                     --caps N,N,... -- /workload kernel=… report=3 control=4 scratch=/tmp
//! vmm:        VMM --ram-mib N --guest elf:FILE --scratch DIR -- kernel=… mib=… iters=… hold=… seed=…
//! ```
//!
//! A runtime passes fds 3 and 4 on to the workload untouched; a VMM speaks for its guest on them
//! (it stamps the guest's `ready`, `start` and `done` hypercalls, and blocks on fd 4 for
//! `wait_host`). `lab check` uses the same ABI with other values (a random host name, capability
//! set, memory limit; `--guest real:FILE` or `long:FILE` for the early VMM steps).
//!
//! # Which program
//!
//! The one `lab check` installed the last time a step of that track passed
//! (`labs/.lab/bin/container`, `labs/.lab/bin/vmm`, relative to where `lab` runs), or the file
//! named by `ISOLAB_STUDENT_CONTAINER` / `ISOLAB_STUDENT_VMM`.
//!
//! Limits: the lab applies `--pids-limit` and `--cpu-limit` to the cgroup itself; the memory
//! limit of a container is the runtime's job (`--memory-limit`), as it is runc's.

use super::child::{self, Exec, CONTROL_FD, REPORT_FD};
use super::container::capabilities;
use super::instance::{Instance, Parts, Timeline};
use super::spawn::spawn_exec;
use super::{Availability, Backend, BackendError, Family, Limits, Spec};
use crate::lab::Lab;
use crate::results::info;
use crate::workload;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the student built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A container runtime (`labs/container/`).
    Container,
    /// A VMM (`labs/vmm/`).
    Vmm,
}

impl Kind {
    /// `container` or `vmm`: the backend's name after `student:`, and the installed file's.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Vmm => "vmm",
        }
    }

    /// The track's last building step.
    pub fn last_step(self) -> u32 {
        match self {
            Kind::Container => 7,
            Kind::Vmm => 5,
        }
    }

    /// The environment variable that names the program instead of the installed one.
    pub fn env_var(self) -> &'static str {
        match self {
            Kind::Container => "ISOLAB_STUDENT_CONTAINER",
            Kind::Vmm => "ISOLAB_STUDENT_VMM",
        }
    }
}

/// Where `lab check` installs a track's program that passed, under the labs directory (and,
/// with the extension `.step`, the number of the step it passed).
pub fn installed(labs: &Path, kind: Kind) -> PathBuf {
    labs.join(".lab").join("bin").join(kind.word())
}

/// The guest a student VMM is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmmGuest {
    /// None: the VMM builds its machine, reports `ready` and waits (VMM step 2).
    Nothing,
    /// Flat 16-bit code, started in real mode (step 3).
    Real(Vec<u8>),
    /// Flat 64-bit code, started in long mode, ring 3 (step 4).
    Long(Vec<u8>),
    /// The lab's bare guest ELF, over the hypercall ABI (step 5 and `lab run`).
    Bare,
}

/// What `lab check` varies from one run to the next; `lab run` uses the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The container's host name (default: `isolab-<instance>`).
    pub hostname: Option<String>,
    /// Capability numbers the container keeps (default: Docker's 14).
    pub caps: Option<Vec<u32>>,
    /// The container's memory limit, in bytes, for the runtime to set (default: the lab's
    /// `--memory-limit`).
    pub memory_limit: Option<u64>,
    /// The name of the marker file in the container's root (default: `isolab-root`).
    pub root_marker: String,
    /// Words appended to the workload's command line.
    pub workload_args: Vec<String>,
    /// The VMM's guest.
    pub guest: VmmGuest,
    /// The VMM's guest RAM in bytes (default: what the workload's arena needs).
    pub ram_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hostname: None,
            caps: None,
            memory_limit: None,
            root_marker: "isolab-root".into(),
            workload_args: Vec::new(),
            guest: VmmGuest::Bare,
            ram_bytes: None,
        }
    }
}

/// A backend running the student's program.
#[derive(Clone, Debug)]
pub struct Student {
    kind: Kind,
    name: String,
    program: Option<PathBuf>,
    /// Whether the program does every step of its track (see [`Backend::family`]).
    complete: bool,
    /// What to hand the program.
    pub options: Options,
}

impl Student {
    /// The backend of `kind` running `program`, which does every step of its track when
    /// `complete`.
    pub fn new(kind: Kind, program: PathBuf, complete: bool) -> Student {
        Student {
            kind,
            name: format!("student:{}", kind.word()),
            program: Some(program),
            complete,
            options: Options::default(),
        }
    }

    /// The backend of `kind` running the installed program, complete when its step was the
    /// track's last (`lab check` writes the step beside it); or the program the environment
    /// names, taken as complete.
    pub fn installed(kind: Kind) -> Student {
        match std::env::var_os(kind.env_var()) {
            Some(program) => Student::new(kind, program.into(), true),
            None => {
                let program = installed(Path::new("labs"), kind);
                // Written by `lab check`, in the student's `labs/`: a few bytes, read with a
                // bound like every file the student could have replaced.
                let step = program.with_extension("step");
                let step = crate::files::read_to_string_bounded(&step, 4096, "step file")
                    .ok()
                    .and_then(|s| s.trim().parse::<u32>().ok());
                Student::new(kind, program, step == Some(kind.last_step()))
            }
        }
    }

    /// `student:container` and `student:vmm`, by name.
    pub fn by_name(name: &str) -> Option<Student> {
        match name {
            "student:container" => Some(Student::installed(Kind::Container)),
            "student:vmm" => Some(Student::installed(Kind::Vmm)),
            _ => None,
        }
    }

    fn program(&self) -> Result<&Path, String> {
        let program = self.program.as_deref().ok_or("no program")?;
        let meta = fs::metadata(program).map_err(|_| {
            format!(
                "no {} of yours at {} yet: `lab check {}-1` builds your crate and installs it \
                 when its checks pass (or set {})",
                self.kind.word(),
                program.display(),
                self.kind.word(),
                self.kind.env_var()
            )
        })?;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("{} is not executable", program.display()));
        }
        Ok(program)
    }
}

impl Backend for Student {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> &str {
        match self.kind {
            Kind::Container => {
                "your container runtime (labs/container/), started as the ABI in labs/abi.md says"
            }
            Kind::Vmm => "your VMM (labs/vmm/) running the lab's bare guest over the hypercall ABI",
        }
    }

    /// A finished runtime is a container and a finished VMM runs a guest without an OS. A
    /// program installed from an earlier step is only part of one, so its figures are shown but
    /// never counted in a claim, like `ns-floor`'s.
    fn family(&self) -> Family {
        match (self.kind, self.complete) {
            (Kind::Container, true) => Family::Container,
            (Kind::Vmm, true) => Family::VmNoOs,
            (_, false) => Family::Floor,
        }
    }

    fn availability(&self, lab: &Lab) -> Availability {
        if let Err(why) = self.program() {
            return Availability::Unavailable(why);
        }
        if let Availability::Unavailable(why) = Availability::of_cgroups(lab) {
            return Availability::Unavailable(why);
        }
        match self.kind {
            Kind::Container if !nix::unistd::geteuid().is_root() => Availability::Unavailable(
                "the container exercises run as root (they create namespaces without a user namespace)"
                    .into(),
            ),
            Kind::Vmm => match super::vm::kvm::open() {
                Ok(_) => Availability::Available,
                Err(e) => Availability::Unavailable(e.to_string()),
            },
            Kind::Container => Availability::Available,
        }
    }

    /// Only when named: there may be no program of the student's yet.
    fn default_enabled(&self) -> bool {
        false
    }

    /// The exercises' runtimes attach no disk and no network.
    fn supports(&self, _lab: &Lab, kernel: crate::workload::Kernel) -> Result<(), String> {
        if kernel.needs_disk() || kernel.needs_network() {
            return Err("the exercises' runtimes attach no disk and no network".into());
        }
        if self.kind == Kind::Vmm && kernel.needs_os() && kernel != crate::workload::Kernel::Probe {
            return Err(
                "the exercises' VMM runs a bare guest: no OS to fork or to run out of memory in"
                    .into(),
            );
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        let program = self
            .program()
            .map_err(|reason| BackendError::Unavailable {
                backend: self.name.clone(),
                reason,
            })?
            .to_path_buf();
        let mut timeline = Timeline::start();
        let name = lab.next_instance_name();
        let own_limits = match self.kind {
            // The memory limit is the runtime's to set.
            Kind::Container => Limits {
                memory_bytes: None,
                ..*limits
            },
            Kind::Vmm => *limits,
        };
        let cgroup = lab.cgroup_for(&name, &own_limits)?;
        let placement = cgroup.placement()?;
        timeline.mark("cgroup");

        let dir = lab.workdir().join(format!("student-{name}"));
        let cleanup = {
            let dir = dir.clone();
            move || remove_instance_dir(&dir)
        };
        let prepared = match self.kind {
            Kind::Container => {
                let cgroup_dir = cgroup
                    .memory_dir()
                    .ok_or(BackendError::Cgroup(
                        crate::cgroup::CgroupError::MissingController("memory"),
                    ))?
                    .to_path_buf();
                self.container_args(lab, &name, &dir, &cgroup_dir, spec, limits)
            }
            Kind::Vmm => self.vmm_args(&dir, spec),
        };
        let args = match prepared {
            Ok(args) => args,
            Err(e) => {
                cleanup();
                return Err(e);
            }
        };
        timeline.mark("bundle");

        let exec = Exec::new(&program, self.kind.word(), &args, &[]);
        let (ends, fds) = child::pipes(None)?;
        let spawned = spawn_exec(0, &placement, &fds, &exec);
        drop(placement);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                cleanup();
                return Err(BackendError::sys("clone")(e));
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
            timeout: lab.timeout,
            cleanup: vec![Box::new(cleanup)],
        });
        if self.kind == Kind::Container {
            // The memory limit is the student's runtime's to apply: it is checked too.
            let disk = instance.cgroup().and_then(|c| c.limits().1.cloned());
            instance.expect_limits(*limits, disk);
        }
        match self.kind {
            Kind::Container => {
                instance.note(info::IMAGE_BYTES, workload::WORKLOAD_ELF.len());
                instance.note(info::IMAGE, "a directory holding one static executable");
            }
            Kind::Vmm => {
                instance.note(info::GUEST_OS, "none");
                if self.options.guest == VmmGuest::Bare {
                    instance.note(info::IMAGE_BYTES, super::vm::GUEST_ELF.len());
                    instance.note(info::IMAGE, "the lab's bare guest ELF");
                }
            }
        }
        Ok(instance)
    }
}

impl Student {
    /// Make the container's root directory and say how to start the runtime.
    fn container_args(
        &self,
        lab: &Lab,
        name: &str,
        root: &Path,
        cgroup_dir: &Path,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<Vec<String>, BackendError> {
        make_root(lab, root, &self.options.root_marker)
            .map_err(BackendError::io(format!("make {}", root.display())))?;
        let o = &self.options;
        let caps: Vec<u32> = o
            .caps
            .clone()
            .unwrap_or_else(|| capabilities::DOCKER_DEFAULT.iter().map(|c| c.0).collect());
        let caps: Vec<String> = caps.iter().map(u32::to_string).collect();
        let mut args = vec![
            "--rootfs".into(),
            root.to_string_lossy().into_owned(),
            "--hostname".into(),
            o.hostname
                .clone()
                .unwrap_or_else(|| format!("isolab-{name}")),
            "--cgroup".into(),
            cgroup_dir.to_string_lossy().into_owned(),
        ];
        if let Some(bytes) = o.memory_limit.or(limits.memory_bytes) {
            args.extend(["--memory-limit".into(), bytes.to_string()]);
        }
        args.extend([
            "--caps".into(),
            caps.join(","),
            "--".into(),
            "/workload".into(),
        ]);
        let given = workload::Given {
            scratch: Some(Path::new("/tmp")),
            ..workload::Given::default()
        };
        args.extend(workload::argv(spec, REPORT_FD, CONTROL_FD, &given));
        args.extend(o.workload_args.iter().cloned());
        Ok(args)
    }

    /// Write the guest the VMM is to run and say how to start the VMM.
    fn vmm_args(&self, dir: &Path, spec: &Spec) -> Result<Vec<String>, BackendError> {
        fs::create_dir(dir).map_err(BackendError::io(format!("create {}", dir.display())))?;
        let write = |file: &str, bytes: &[u8]| {
            let path = dir.join(file);
            fs::write(&path, bytes)
                .map_err(BackendError::io(format!("write {}", path.display())))
                .map(|()| path.to_string_lossy().into_owned())
        };
        let o = &self.options;
        let ram = o
            .ram_bytes
            .unwrap_or_else(|| super::vm::memory::ram_for_arena(spec.arena_bytes()));
        let mut args = vec!["--ram-mib".to_string(), (ram >> 20).to_string()];
        let guest = match &o.guest {
            VmmGuest::Nothing => None,
            VmmGuest::Real(code) => Some(format!("real:{}", write("guest.bin", code)?)),
            VmmGuest::Long(code) => Some(format!("long:{}", write("guest.bin", code)?)),
            VmmGuest::Bare => Some(format!("elf:{}", write("guest.elf", super::vm::GUEST_ELF)?)),
        };
        if let Some(guest) = guest {
            args.extend(["--guest".into(), guest]);
        }
        // The instance's own scratch directory, the lab's alone (see `crate::lab::Scratch`):
        // removed with the instance's directory.
        let scratch = dir.join("scratch");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(BackendError::io(format!("create {}", scratch.display())))?;
        args.extend([
            "--scratch".into(),
            scratch.to_string_lossy().into_owned(),
            "--".into(),
        ]);
        args.extend(spec.to_string().split(' ').map(str::to_string));
        args.extend(o.workload_args.iter().cloned());
        Ok(args)
    }
}

/// The container's root: the workload, empty `proc/`, `dev/`, `tmp/`, and the marker file.
///
/// The workload is a hard link to one copy per lab made for students' containers, not to the
/// lab's own: a runtime that forgot to protect it cannot change what the other backends run.
fn make_root(lab: &Lab, root: &Path, marker: &str) -> std::io::Result<()> {
    let copy = lab.workdir().join("student-workload");
    if !copy.exists() {
        // Named after the instance: two threads of one lab may get here at once.
        let mut part = root.as_os_str().to_owned();
        part.push(".workload");
        let part = PathBuf::from(part);
        fs::copy(lab.workload_path(), &part)?;
        fs::rename(&part, &copy)?;
    }
    fs::create_dir(root)?;
    for (dir, mode) in [("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777)] {
        fs::create_dir(root.join(dir))?;
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode))?;
    }
    let exe = root.join("workload");
    if fs::hard_link(&copy, &exe).is_err() {
        fs::copy(&copy, &exe)?;
    }
    fs::write(root.join(marker), b"")?;
    Ok(())
}

/// Remove an instance's directory. A runtime that forgot to make its mounts private may have
/// left its bind mount of the root on the host: detach whatever is mounted there first.
fn remove_instance_dir(dir: &Path) {
    for _ in 0..8 {
        if nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH).is_err() {
            break;
        }
    }
    let _ = fs::remove_dir_all(dir);
}
