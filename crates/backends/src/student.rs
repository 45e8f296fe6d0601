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
//!
//! # Who your program runs as
//!
//! The lab runs as root; your program is code it did not write, so it gets only what its
//! exercise needs ([`RunAs`]):
//!
//! * **a runtime** must create namespaces, mount, `pivot_root`, set a host name and drop
//!   capabilities: all of that needs `CAP_SYS_ADMIN` — over the namespaces it makes, not over
//!   the host. So the lab starts it as uid 0 *of a user namespace of its own*, mapped to a uid
//!   of its own on the host that no account uses (as the lab's own containers,
//!   [`isolab_container::namespaces::MappedRoot`]). Inside, it has every capability, over what
//!   that namespace owns: the namespaces it creates next, the mounts in them. On the host it is
//!   an ordinary uid: it cannot write a root-owned file, read `/root`, or rename the machine.
//!   The one host file it must write, its cgroup's memory limit (step 6), is given to that uid.
//!   Where the kernel allows no user namespace (`user.max_user_namespaces` is 0) there is no
//!   other way to let it make namespaces: it runs as the host's root, and `container_root` says
//!   so;
//! * **a VMM** needs no capability at all, only `/dev/kvm`: it runs as a uid of its own, in the
//!   group that may open `/dev/kvm` — or, where only root may, with a `/dev/kvm` node of its own
//!   ([`OwnKvm`]).

mod kvm_calls;

pub use kvm_calls::{KvmCall, KvmCalls, Region};
pub use kvm_calls::{
    KVM_CHECK_EXTENSION, KVM_CREATE_VCPU, KVM_CREATE_VM, KVM_GET_API_VERSION,
    KVM_SET_USER_MEMORY_REGION, KVM_SET_USER_MEMORY_REGION2,
};

use crate::instance::{Instance, Parts, Timeline};
use crate::lab::Lab;
use crate::{Availability, Backend, BackendError, Family, Limits, Spec};
use isolab_container::namespaces::MappedRoot;
use isolab_container::{capabilities, namespaces};
use isolab_payload as workload;
use isolab_results::info;
use isolab_spawn::child;
use isolab_spawn::child::{Exec, CONTROL_FD, REPORT_FD};
use isolab_spawn::{spawn_exec_with, Streams};
use nix::errno::Errno;
use std::ffi::CString;
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

    /// The first step whose program runs the lab's workload, so that `lab run` can measure it:
    /// a runtime runs it from its first step (fork and exec); a VMM only from its last, when it
    /// loads the lab's bare guest (steps 1–4 open KVM, build a machine, run code of the
    /// checker's).
    pub fn runs_workload_from(self) -> u32 {
        match self {
            Kind::Container => 1,
            Kind::Vmm => 5,
        }
    }

    /// "your runtime", "your VMM": what the student built, in labels.
    pub fn yours(self) -> &'static str {
        match self {
            Kind::Container => "your runtime",
            Kind::Vmm => "your VMM",
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
    /// Start a runtime in a mount namespace of its own user namespace whose `/` is shared, as
    /// systemd makes the host's: a runtime that forgot to make its mounts private then fails
    /// here as it would there, whatever this host's `/` is (`lab check` sets it).
    pub shared_root: bool,
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
            shared_root: false,
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
    /// The step `lab check` installed it from, when known (not for a program the environment
    /// names, nor for the checks' own runs).
    step: Option<u32>,
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
            step: None,
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
                let labs = Path::new("labs");
                let program = installed(labs, kind);
                // Written by `lab check`, in the student's `labs/`: a few bytes, read with a
                // bound like every file the student could have replaced, and as root through
                // no link (see `files::open_regular_beneath`).
                let step = program.with_extension("step");
                let step = match step.strip_prefix(labs) {
                    Ok(rel) if nix::unistd::geteuid().is_root() => {
                        isolab_host::files::read_to_string_beneath(labs, rel, 4096, "step file")
                    }
                    _ => isolab_host::files::read_to_string_bounded(&step, 4096, "step file"),
                };
                let step = step.ok().and_then(|s| s.trim().parse::<u32>().ok());
                Student {
                    step,
                    ..Student::new(kind, program, step == Some(kind.last_step()))
                }
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
            Kind::Vmm => match isolab_vmm::kvm::open() {
                Ok(_) => Availability::Available,
                Err(e) => Availability::Unavailable(e.to_string()),
            },
            Kind::Container => Availability::Available,
        }
    }

    /// Only when named: there may be no program of the student's yet.
    fn left_out_by_default(&self) -> Option<String> {
        Some(format!(
            "what you build in the exercises of labs/ runs only when asked for: `--backends {}`",
            self.name
        ))
    }

    /// The exercises' runtimes attach no disk and no network, and run the lab's plain root; a
    /// VMM installed from a step before the one that loads the lab's guest runs no workload at
    /// all. Refusing here (not failing every run) lets `lab run` measure the other backends and
    /// say which step yours needs.
    fn supports(&self, lab: &Lab, kernel: isolab_payload::Kernel) -> Result<(), String> {
        if lab.settings.image_spec.is_some() {
            return Err(
                "the exercises' runtimes run the lab's plain root, not its layered image".into(),
            );
        }
        if let Some(step) = self.step.filter(|s| *s < self.kind.runs_workload_from()) {
            return Err(format!(
                "{} passed step {step} of {}; it runs the lab's workload from step {} \
                 (`lab check {}-{}`)",
                self.kind.yours(),
                self.kind.last_step(),
                self.kind.runs_workload_from(),
                self.kind.word(),
                self.kind.runs_workload_from()
            ));
        }
        if kernel.needs_disk() || kernel.needs_network() {
            return Err("the exercises' runtimes attach no disk and no network".into());
        }
        if self.kind == Kind::Vmm && kernel.needs_os() && kernel != isolab_payload::Kernel::Probe {
            return Err(
                "the exercises' VMM runs a bare guest: no OS to fork or to run out of memory in"
                    .into(),
            );
        }
        Ok(())
    }

    fn start(&self, lab: &Lab, spec: &Spec, limits: &Limits) -> Result<Instance, BackendError> {
        self.start_inner(lab, spec, limits, false)
            .map(|(instance, _)| instance)
    }
}

impl Student {
    /// Start the VMM as [`Backend::start`] does, watching its KVM calls of steps 1 and 2
    /// (`kvm_calls`): what `lab check` looks at from outside.
    pub fn start_watching_kvm(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
    ) -> Result<(Instance, KvmCalls), BackendError> {
        let (instance, calls) = self.start_inner(lab, spec, limits, true)?;
        let calls = calls.ok_or_else(|| BackendError::Unavailable {
            backend: self.name.clone(),
            reason: "no KVM calls to watch".into(),
        })?;
        Ok((instance, calls))
    }

    fn start_inner(
        &self,
        lab: &Lab,
        spec: &Spec,
        limits: &Limits,
        watch_kvm: bool,
    ) -> Result<(Instance, Option<KvmCalls>), BackendError> {
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
                        isolab_resources::cgroup::CgroupError::MissingController("memory"),
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

        let run_as = RunAs::choose(self.kind, &name, &dir);
        if let Err(e) = run_as.hand_over(&cgroup, &dir) {
            cleanup();
            return Err(e);
        }
        let exec = Exec::new(&program, self.kind.word(), &args, &[]);
        let (ends, mut fds) = child::pipes(None)?;
        let shared_root = self.kind == Kind::Container && self.options.shared_root;
        let watch = match watch_kvm && self.kind == Kind::Vmm {
            true => {
                match kvm_calls::Prepared::new(|end| fds.keep(end).map_err(|_| Errno::EMFILE)) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        cleanup();
                        return Err(BackendError::sys("socketpair")(e));
                    }
                }
            }
            false => None,
        };
        let become_it = || {
            run_as.enter()?;
            if shared_root {
                shared_root_namespace()?;
            }
            match &watch {
                Some(w) => w.install(),
                None => Ok(()),
            }
        };
        let phase = run_as
            .phase()
            .or((shared_root || watch.is_some()).then_some("before_exec"));
        let before_exec = phase.map(|phase| (phase, &become_it as isolab_spawn::BeforeExec));
        let spawned = spawn_exec_with(0, &placement, &fds, &exec, Streams::Fixed, before_exec);
        drop(placement);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                cleanup();
                return Err(BackendError::sys("clone")(e));
            }
        };
        // A child that failed before exec sent no listener: its run says why.
        let calls = watch.and_then(|w| w.watch().ok());
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
        if let Some(root) = run_as.container_root() {
            instance.note(info::CONTAINER_ROOT, root);
        }
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
                    instance.note(info::IMAGE_BYTES, isolab_payload::GUEST_ELF.len());
                    instance.note(info::IMAGE, "the lab's bare guest ELF");
                }
            }
        }
        // A program from an earlier step is labelled as what it is in every table.
        if let (Some(step), false) = (self.step, self.complete) {
            instance.note(
                info::UNFINISHED,
                format!(
                    "{} (step {step} of {})",
                    self.kind.yours(),
                    self.kind.last_step()
                ),
            );
        }
        Ok((instance, calls))
    }
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
        // Modes set, not left to the umask: the VMM runs as a uid of its own ([`RunAs`]).
        fs::create_dir(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
            .map_err(BackendError::io(format!("create {}", dir.display())))?;
        let write = |file: &str, bytes: &[u8]| {
            let path = dir.join(file);
            fs::write(&path, bytes)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o644)))
                .map_err(BackendError::io(format!("write {}", path.display())))
                .map(|()| path.to_string_lossy().into_owned())
        };
        let o = &self.options;
        let ram = o
            .ram_bytes
            .unwrap_or_else(|| isolab_vmm::memory::ram_for_arena(spec.arena_bytes()));
        let mut args = vec!["--ram-mib".to_string(), (ram >> 20).to_string()];
        let guest = match &o.guest {
            VmmGuest::Nothing => None,
            VmmGuest::Real(code) => Some(format!("real:{}", write("guest.bin", code)?)),
            VmmGuest::Long(code) => Some(format!("long:{}", write("guest.bin", code)?)),
            VmmGuest::Bare => Some(format!(
                "elf:{}",
                write("guest.elf", isolab_payload::GUEST_ELF)?
            )),
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

/// Who the student's program runs as on the host (see the module's documentation).
#[derive(Debug)]
enum RunAs {
    /// The lab's own uid: the lab is not root, and has nothing more to give away.
    Lab,
    /// A runtime: uid 0 of a user namespace of its own, mapped to a uid of its own.
    MappedRoot(MappedRoot),
    /// A runtime where the kernel allows no user namespace: the host's root, and why.
    HostRoot(String),
    /// A VMM: a uid of its own, with the group that may open `/dev/kvm` when one is needed.
    Unprivileged {
        /// The host uid (and gid of the same number).
        id: libc::c_long,
        /// Its supplementary groups: none, or `/dev/kvm`'s group.
        groups: Vec<libc::gid_t>,
        /// Where only root may open the host's `/dev/kvm`: a node of the VMM's own.
        own_kvm: Option<OwnKvm>,
    },
}

/// A `/dev/kvm` of the VMM's own, for a host whose node only root may open (mode 0600, no
/// `kvm` group: a machine without udev's rules, such as the emulated student machine).
///
/// Permissions belong to the inode, so no bind mount of the host's node helps: the child makes
/// a node of the same device number, owned by the VMM's uid, on a tmpfs of its own (the lab's
/// work directory may be on a `nodev` file system), and binds it onto `/dev/kvm` — in a mount
/// namespace of its own, private, so no other process sees it and it goes when the VMM does.
#[derive(Debug)]
struct OwnKvm {
    /// An empty directory of the instance, where the tmpfs goes.
    dir: CString,
    /// The node on it.
    node: CString,
    /// `/dev/kvm`'s device number.
    rdev: libc::dev_t,
}

impl RunAs {
    /// Who the program of instance `name` (whose directory is `dir`) runs as.
    fn choose(kind: Kind, name: &str, dir: &Path) -> RunAs {
        if !nix::unistd::geteuid().is_root() {
            return RunAs::Lab;
        }
        let mapped = MappedRoot::for_container(name);
        match kind {
            Kind::Container => match namespaces::mapped_root_refused() {
                Some(why) => RunAs::HostRoot(why),
                None => RunAs::MappedRoot(mapped),
            },
            Kind::Vmm => {
                let (groups, own_kvm) = match kvm_access() {
                    KvmAccess::Everyone => (Vec::new(), None),
                    KvmAccess::Group(gid) => (vec![gid], None),
                    KvmAccess::RootOnly(rdev) => {
                        let cstring =
                            |p: PathBuf| CString::new(p.into_os_string().into_encoded_bytes()).ok();
                        let own = cstring(dir.join("dev")).zip(cstring(dir.join("dev/kvm")));
                        (
                            Vec::new(),
                            own.map(|(dir, node)| OwnKvm { dir, node, rdev }),
                        )
                    }
                };
                RunAs::Unprivileged {
                    id: libc::c_long::from(mapped.id),
                    groups,
                    own_kvm,
                }
            }
        }
    }

    /// Give the uid the host files its program must write: a runtime's memory limit in its
    /// cgroup (step 6), a VMM's scratch directory.
    fn hand_over(
        &self,
        cgroup: &isolab_resources::cgroup::Cgroup,
        dir: &Path,
    ) -> Result<(), BackendError> {
        let (id, files): (u32, Vec<PathBuf>) = match self {
            RunAs::MappedRoot(m) => {
                let memory = cgroup.memory_dir().map(Path::to_path_buf);
                let files = [
                    "memory.max",
                    "memory.swap.max",
                    "memory.limit_in_bytes",
                    "memory.memsw.limit_in_bytes",
                ];
                (
                    m.id,
                    memory
                        .iter()
                        .flat_map(|d| files.iter().map(move |f| d.join(f)))
                        .filter(|f| f.exists())
                        .collect(),
                )
            }
            RunAs::Unprivileged { id, own_kvm, .. } => {
                if own_kvm.is_some() {
                    // The mount point of the VMM's tmpfs: root's, and empty on the host.
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(dir.join("dev"))
                        .map_err(BackendError::io(format!("create {}/dev", dir.display())))?;
                }
                (*id as u32, vec![dir.join("scratch")])
            }
            RunAs::Lab | RunAs::HostRoot(_) => return Ok(()),
        };
        for file in files {
            std::os::unix::fs::lchown(&file, Some(id), Some(id))
                .map_err(BackendError::io(format!("chown {}", file.display())))?;
        }
        Ok(())
    }

    /// The start-up phase the change of identity is stamped as, if there is one.
    fn phase(&self) -> Option<&'static str> {
        match self {
            RunAs::MappedRoot(_) => Some("userns"),
            RunAs::Unprivileged { .. } => Some("setuid"),
            RunAs::Lab | RunAs::HostRoot(_) => None,
        }
    }

    /// **In the child**, between fork and exec, sharing the lab's memory: become who the
    /// program runs as. System calls on data prepared before the fork only.
    ///
    /// Changing uid clears the parent-death signal the child set (`PR_SET_PDEATHSIG` is reset
    /// whenever credentials change): it is set again last.
    fn enter(&self) -> Result<(), (&'static str, Errno)> {
        match self {
            RunAs::MappedRoot(m) => m.enter()?,
            RunAs::Unprivileged {
                id,
                groups,
                own_kvm,
            } => {
                if let Some(kvm) = own_kvm {
                    kvm.install(*id)?;
                }
                // Groups first, then the gid, then the uid: once the uid is not 0, neither may
                // change. Raw system calls: glibc's wrappers would try to change every thread
                // of the lab, whose memory this child shares (see `MappedRoot::enter`).
                // SAFETY: setgroups with a list of `groups.len()` gids prepared before the
                // fork; setresgid and setresuid with integers.
                unsafe {
                    raw(
                        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                        "setgroups",
                    )?;
                    raw(
                        libc::syscall(libc::SYS_setresgid, *id, *id, *id),
                        "setresgid",
                    )?;
                    raw(
                        libc::syscall(libc::SYS_setresuid, *id, *id, *id),
                        "setresuid",
                    )?;
                }
            }
            RunAs::Lab | RunAs::HostRoot(_) => return Ok(()),
        }
        child::die_with_parent().map_err(|e| ("die with the lab", e))
    }

    /// Who a runtime's root is on the host, in words (the `container_root` fact).
    fn container_root(&self) -> Option<String> {
        match self {
            RunAs::MappedRoot(m) => Some(format!(
                "uid {}: an unprivileged uid of its own (the lab starts your runtime as root of \
                 a user namespace of its own)",
                m.id
            )),
            RunAs::HostRoot(why) => Some(format!("uid 0: the host's root ({why})")),
            RunAs::Lab | RunAs::Unprivileged { .. } => None,
        }
    }
}

/// **In the child**, as the runtime's root: a mount namespace whose mounts are shared, in a
/// peer group of their own.
///
/// systemd makes the host's `/` shared (`MS_SHARED`): a mount made under it propagates to every
/// mount namespace copied from it, so a runtime must make its new namespace's mounts private
/// before it mounts anything, or its mounts show on the host and `pivot_root` refuses to move a
/// shared root (`EINVAL`). A host without systemd keeps `/` private, and the mistake goes
/// unseen. This namespace makes every host alike: it belongs to the runtime's user namespace,
/// so the runtime's own `unshare(CLONE_NEWNS)` copies its mounts *as peers* (a copy into a
/// namespace of another user namespace would make them slaves, which propagate nothing back).
/// Made private first, then shared: new peer groups, so nothing reaches the real host.
fn shared_root_namespace() -> Result<(), (&'static str, Errno)> {
    let mount = |flags, step| {
        // SAFETY: mount with a static path, null pointers where it takes none, and flags.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err((step, Errno::last()))
        }
    };
    // SAFETY: unshare with a flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(("unshare a mount namespace", Errno::last()));
    }
    mount(libc::MS_REC | libc::MS_PRIVATE, "make mounts private")?;
    mount(libc::MS_REC | libc::MS_SHARED, "make / shared")
}

fn raw(r: libc::c_long, step: &'static str) -> Result<(), (&'static str, Errno)> {
    if r == 0 {
        Ok(())
    } else {
        Err((step, Errno::last()))
    }
}

impl OwnKvm {
    /// **In the child**, still root: a mount namespace of its own, private; a tmpfs on the
    /// instance's `dev/`; the node on it, given to `id`; bound onto `/dev/kvm`.
    fn install(&self, id: libc::c_long) -> Result<(), (&'static str, Errno)> {
        let check = |r: libc::c_int, step| {
            if r == 0 {
                Ok(())
            } else {
                Err((step, Errno::last()))
            }
        };
        // SAFETY: system calls with NUL-terminated strings prepared before the fork, null
        // pointers where the kernel takes none, and integers.
        unsafe {
            check(
                libc::unshare(libc::CLONE_NEWNS),
                "unshare a mount namespace",
            )?;
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                "make mounts private",
            )?;
            check(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NOEXEC,
                    c"mode=0700,size=64k".as_ptr().cast(),
                ),
                "mount a tmpfs for /dev/kvm",
            )?;
            check(
                libc::mknod(self.node.as_ptr(), libc::S_IFCHR | 0o600, self.rdev),
                "mknod /dev/kvm",
            )?;
            check(
                libc::chown(self.node.as_ptr(), id as libc::uid_t, id as libc::gid_t),
                "chown /dev/kvm",
            )?;
            check(
                libc::mount(
                    self.node.as_ptr(),
                    c"/dev/kvm".as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                "bind /dev/kvm",
            )?;
        }
        Ok(())
    }
}

/// Who may open `/dev/kvm`.
enum KvmAccess {
    /// Anyone (mode 0666 on some distributions), or there is none to open.
    Everyone,
    /// Its group (`root:kvm 0660` on most distributions).
    Group(libc::gid_t),
    /// Root only (0600, no udev rules): its device number.
    RootOnly(libc::dev_t),
}

fn kvm_access() -> KvmAccess {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata("/dev/kvm") else {
        return KvmAccess::Everyone;
    };
    if meta.mode() & 0o006 == 0o006 {
        KvmAccess::Everyone
    } else if meta.mode() & 0o060 == 0o060 {
        KvmAccess::Group(meta.gid())
    } else {
        KvmAccess::RootOnly(meta.rdev())
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
    // Modes set, not left to the umask: the runtime runs as a uid of its own ([`RunAs`]), which
    // must reach and read all of it, and may change none of it.
    fs::create_dir(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    for (dir, mode) in [("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777)] {
        fs::create_dir(root.join(dir))?;
        fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode))?;
    }
    let exe = root.join("workload");
    if fs::hard_link(&copy, &exe).is_err() {
        fs::copy(&copy, &exe)?;
    }
    fs::write(root.join(marker), b"")?;
    fs::set_permissions(root.join(marker), fs::Permissions::from_mode(0o644))?;
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
